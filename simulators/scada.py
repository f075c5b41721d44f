"""A SCADA server simulator: an asyncua server that gets its identity from the GDS by pull (OPC 10000-12 7.9).

Life of one: it starts with a factory self-signed certificate; registers with the GDS (with a registrar
account, as a commissioning engineer would); pulls a CA-issued certificate, by CSR or by asking the GDS
for a new key pair; installs it and restarts its endpoint with it; pulls its group's trust list into its
PKI folder; later, asks GetCertificateStatus as ApplicationSelfAdmin (its own certificate, no user) and
renews when told to.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Literal

from asyncua import Client, Server, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import BaseModel

from opcua_gds import _asyncua_compat as asyncua_compat
from opcua_gds.certificate_chain import issuer_chain
from opcua_gds.client_session import admin_client
from opcua_gds.gds.application_record import ApplicationRecord, LocalizedName
from opcua_gds.gds.client import FinishedRequest, GdsClient
from opcua_gds.push.target.state import load_trust
from trustlists.blocking import run_blocking
from trustlists.exports import write_pki_folders
from trustlists.models import TrustList, TrustListContent
from trustlists.safe_files import private_directory, write_public, write_secret


class ScadaSettings(BaseModel):
    name: str
    application_uri: str
    endpoint: str  # opc.tcp://127.0.0.1:PORT/scada
    pki_dir: Path
    gds_url: str
    registrar_user: str
    registrar_password: str
    key_flow: Literal["csr", "new-key"] = "csr"


class ScadaSimulator:
    def __init__(self, settings: ScadaSettings) -> None:
        self.settings = settings
        self.server: Server | None = None
        self.application_id: ua.NodeId | None = None
        self.trust_list: TrustListContent | None = None
        self._own = settings.pki_dir / "own"
        self._issuers: list[bytes] = []  # IssuerCertificates of the last FinishRequest

    # -- identity on disk -----------------------------------------------------------------------
    @property
    def cert_path(self) -> Path:
        return self._own / "certs" / "cert.der"

    @property
    def key_path(self) -> Path:
        return self._own / "private" / "key.pem"

    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.cert_path.read_bytes())

    def _host(self) -> str:
        from urllib.parse import urlparse

        return urlparse(self.settings.endpoint).hostname or "localhost"

    def _write_identity(self, cert_der: bytes, key_pem: bytes) -> None:
        (self._own / "certs").mkdir(parents=True, exist_ok=True)
        private_directory(self.key_path.parent)
        write_secret(self.key_path, key_pem)
        write_public(self.cert_path, cert_der)

    def _self_signed(self) -> None:
        """The factory certificate: self-signed, the Part 6 application profile."""
        key = rsa.generate_private_key(65537, 2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.settings.name),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "factory")])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, True, True, True, False, True, False, False, False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.SubjectAlternativeName(self._san()), critical=False)
                .sign(key, hashes.SHA256()))
        self._write_identity(cert.public_bytes(serialization.Encoding.DER), _pem(key))

    def _san(self) -> list[x509.GeneralName]:
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(self.settings.application_uri)]
        host = self._host()
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
        return names

    def _csr(self) -> tuple[bytes, bytes]:
        key = rsa.generate_private_key(65537, 2048)
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.settings.name)]))
               .add_extension(x509.SubjectAlternativeName(self._san()), critical=False)
               .sign(key, hashes.SHA256()))
        return csr.public_bytes(serialization.Encoding.DER), _pem(key)

    # -- the OPC UA server ----------------------------------------------------------------------
    async def start(self) -> None:
        if not self.cert_path.exists():
            await run_blocking(self._self_signed)
        await self._start_server()

    async def _start_server(self) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.settings.endpoint)
        server.set_server_name(self.settings.name)
        await server.set_application_uri(self.settings.application_uri)
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        await server.load_certificate(str(self.cert_path))
        await server.load_private_key(str(self.key_path))
        # With the CAs above the certificate, from what the GDS handed out and the pulled trust list.
        await asyncua_compat.present_certificate_chain(server, await run_blocking(self._presented_issuers))
        idx = await server.register_namespace("urn:otpki:simulators:scada")
        plant = await server.nodes.objects.add_object(idx, "Plant")
        await plant.add_variable(idx, "LinePressure", 4.2)
        await server.start()
        self.server = server

    def _presented_issuers(self) -> list[bytes]:
        trust = load_trust(self.settings.pki_dir)
        return issuer_chain(self.cert_path.read_bytes(),
                            (*self._issuers, *trust.trusted_certificates, *trust.issuer_certificates))

    async def restart(self) -> None:
        """asyncua bakes the certificate into its endpoints at start: a new identity needs a restart."""
        await self.stop()
        await self._start_server()

    async def stop(self) -> None:
        if self.server is not None:
            await asyncua_compat.stop_server(self.server)
            self.server = None

    # -- talking to the GDS ---------------------------------------------------------------------
    async def _gds_session(self, *, as_registrar: bool) -> Client:
        client = admin_client(self.settings.gds_url, timeout_s=15)
        client.application_uri = self.settings.application_uri
        # The CAs go after the certificate (OPC 10000-6 6.2.3), for a GDS that trusts only the plant root.
        await client.set_security(SecurityPolicyBasic256Sha256, str(self.cert_path), str(self.key_path),
                                  mode=ua.MessageSecurityMode.SignAndEncrypt,
                                  certificate_chain=await run_blocking(self._presented_issuers))
        if as_registrar:
            client.set_user(self.settings.registrar_user)
            client.set_password(self.settings.registrar_password)
        await client.connect()
        return client

    def _record(self) -> ApplicationRecord:
        return ApplicationRecord(
            application_uri=self.settings.application_uri, application_type=ua.ApplicationType.Server,
            application_names=[LocalizedName(text=self.settings.name, locale="en")],
            product_uri="urn:otpki:simulators:scada", discovery_urls=[self.settings.endpoint],
            server_capabilities=["DA"])

    async def enroll(self) -> None:
        """Register, pull a CA-issued certificate, install it, restart, pull the trust list."""
        client = await self._gds_session(as_registrar=True)
        try:
            gds = GdsClient(client)
            existing = [r for r in await gds.find_applications(self.settings.application_uri)]
            if existing and existing[0].application_id is not None:
                from opcua_gds.gds.application_record import application_id_from_str

                self.application_id = application_id_from_str(existing[0].application_id,
                                                              await client.get_namespace_index(
                                                                  "http://opcfoundation.org/UA/GDS/"))
            else:
                self.application_id = await gds.register_application(self._record())
            finished, key_pem = await self._pull(gds)
        finally:
            await client.disconnect()
        await self._install(finished, key_pem)
        await self.refresh_trust_list()

    async def _pull(self, gds: GdsClient) -> tuple[FinishedRequest, bytes]:
        assert self.application_id is not None
        if self.settings.key_flow == "csr":
            csr_der, key_pem = await run_blocking(self._csr)
            request_id = await gds.start_signing_request(self.application_id, csr_der)
            return await gds.wait_for_certificate(self.application_id, request_id), key_pem
        password = "scada-pfx-password"
        request_id = await gds.start_new_key_pair_request(
            self.application_id, subject_name=f"CN={self.settings.name}", domain_names=[self._host()],
            private_key_format="PFX", password=password)
        finished = await gds.wait_for_certificate(self.application_id, request_id)
        assert finished.private_key is not None
        key, _cert, _cas = pkcs12.load_key_and_certificates(finished.private_key, password.encode())
        assert key is not None
        return finished, _pem(key)

    async def _install(self, finished: FinishedRequest, key_pem: bytes) -> None:
        await run_blocking(self._write_identity, finished.certificate, key_pem)
        self._issuers = list(finished.issuer_certificates)
        await self.restart()

    async def refresh_trust_list(self) -> TrustListContent:
        """Pull the group's trust list as ApplicationSelfAdmin and write the PKI folders."""
        assert self.application_id is not None
        client = await self._gds_session(as_registrar=False)
        try:
            content = await GdsClient(client).get_trust_list(self.application_id)
        finally:
            await client.disconnect()
        trust = TrustList(group="pulled", version=0, content_hash=content.content_hash(),
                          created_at=dt.datetime.now(dt.UTC), content=content)
        await run_blocking(write_pki_folders, trust, self.settings.pki_dir)
        self.trust_list = content
        return content

    async def renew_if_needed(self) -> bool:
        """GetCertificateStatus as ApplicationSelfAdmin; renew (new key, CSR) when the GDS says so."""
        assert self.application_id is not None
        client = await self._gds_session(as_registrar=False)
        try:
            gds = GdsClient(client)
            if not await gds.get_certificate_status(self.application_id):
                return False
            finished, key_pem = await self._pull(gds)
        finally:
            await client.disconnect()
        await self._install(finished, key_pem)
        return True


def _pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
