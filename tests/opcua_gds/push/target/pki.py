"""Test PKI for the push-target tests: a CA made with cryptography, client identities, CSR signing, sessions."""

from __future__ import annotations

import datetime as dt
import functools
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from opcua_gds.access import AccessConfig, GdsRole, PasswordUser, hash_password
from opcua_gds.nodeids import CertificateGroups, ServerConfigurationIds, ServerConfigurationMethods
from opcua_gds.trustlist_binary import encode_trustlist
from trustlists.models import TrustListContent, TrustListMask

DER = serialization.Encoding.DER
USERS = {"secadmin": ("sec-pw", [GdsRole.SECURITY_ADMIN]), "operator": ("op-pw", [])}
GROUP = CertificateGroups.PushDefaultApplicationGroup
M = ServerConfigurationMethods
APP_GROUP_ID = ua.NodeId(ServerConfigurationIds.DefaultApplicationGroup)
RSA_SHA256_TYPE = ua.NodeId(12560)


@functools.cache
def access_config() -> AccessConfig:
    """Argon2 hashes are slow on purpose: made once per process, not for every PLC a test starts."""
    return AccessConfig(users=[PasswordUser(name=n, password_hash=hash_password(pw), roles=roles)
                               for n, (pw, roles) in USERS.items()])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass(frozen=True)
class ClientIdentity:
    uri: str
    cert_path: Path
    key_path: Path
    cert_der: bytes


class TestCa:
    __test__ = False

    def __init__(self, name: str = "Test Root CA") -> None:
        self.key = rsa.generate_private_key(65537, 2048)
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        self.cert = (x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(_now() - dt.timedelta(days=1)).not_valid_after(_now() + dt.timedelta(days=3650))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                                    critical=True)
                     .add_extension(ski, critical=False)
                     .sign(self.key, hashes.SHA256()))
        self.der = self.cert.public_bytes(DER)
        self.crl = (x509.CertificateRevocationListBuilder().issuer_name(self.name)
                    .last_update(_now() - dt.timedelta(hours=1)).next_update(_now() + dt.timedelta(days=30))
                    .add_extension(x509.CRLNumber(1), critical=False)
                    .sign(self.key, hashes.SHA256())).public_bytes(DER)

    def trust_list(self) -> TrustListContent:
        return TrustListContent(specified_lists=int(TrustListMask.ALL), trusted_certificates=[self.der],
                                trusted_crls=[self.crl])

    def _leaf(self, subject: x509.Name, public_key: Any, san: list[x509.GeneralName]) -> bytes:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self.name).public_key(public_key)
                .serial_number(x509.random_serial_number()).not_valid_before(_now() - dt.timedelta(hours=1))
                .not_valid_after(_now() + dt.timedelta(days=365))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, True, True, True, False, False, False, False, False),
                               critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.SubjectAlternativeName(san), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                               critical=False)
                .sign(self.key, hashes.SHA256())).public_bytes(DER)

    def sign_csr(self, csr_der: bytes) -> bytes:
        csr = x509.load_der_x509_csr(csr_der)
        try:
            san = list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            san = []
        return self._leaf(csr.subject, csr.public_key(), san)

    def issue_for_key(self, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, cn: str, uri: str) -> bytes:
        return self._leaf(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]), key.public_key(),
                          [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")])

    def client(self, directory: Path, cn: str) -> ClientIdentity:
        key = rsa.generate_private_key(65537, 2048)
        uri = f"urn:test:{cn}"
        der = self.issue_for_key(key, cn, uri)
        return _write_identity(directory, cn, uri, der, key)


def self_signed_client(directory: Path, cn: str) -> ClientIdentity:
    from opcua_gds.push.target.certs import self_signed

    uri = f"urn:test:{cn}"
    der, key = self_signed(cn, uri, ["localhost"])
    return _write_identity(directory, cn, uri, der, key)


def _write_identity(directory: Path, cn: str, uri: str, der: bytes, key: rsa.RSAPrivateKey) -> ClientIdentity:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{cn}.der", directory / f"{cn}.pem"
    cert_path.write_bytes(der)
    key_path.write_bytes(_pem(key))
    return ClientIdentity(uri, cert_path, key_path, der)


async def connect(url: str, ident: ClientIdentity, user: str | None = "secadmin", *,
                  mode: ua.MessageSecurityMode = ua.MessageSecurityMode.SignAndEncrypt, timeout: float = 5) -> Client:
    client = Client(url, timeout=timeout, watchdog_intervall=timeout)
    client.application_uri = ident.uri
    await client.set_security(SecurityPolicyBasic256Sha256, str(ident.cert_path), str(ident.key_path), mode=mode)
    if user is not None:
        client.set_user(user)
        client.set_password(USERS[user][0])
    await client.connect()
    return client


class Push:
    """A minimal push client: calls on ServerConfiguration and the DefaultApplicationGroup TrustList."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.config = client.get_node(ua.NodeId(ServerConfigurationIds.ServerConfiguration))
        self.trust = client.get_node(GROUP.trust_list_node_id())

    async def tl(self, name: str, *args: Any) -> Any:
        return await self.trust.call_method(GROUP.method(name).node_id(), *args)

    async def open(self, mode: int) -> int:
        return int(await self.tl("Open", ua.Variant(mode, ua.VariantType.Byte)))

    async def write(self, handle: int, data: bytes) -> None:
        await self.tl("Write", ua.Variant(handle, ua.VariantType.UInt32), ua.Variant(data, ua.VariantType.ByteString))

    async def close_and_update(self, handle: int) -> bool:
        return bool(await self.tl("CloseAndUpdate", ua.Variant(handle, ua.VariantType.UInt32)))

    async def push_trust_list(self, content: TrustListContent, chunk: int = 1000) -> bool:
        handle = await self.open(0x06)
        data = encode_trustlist(content)
        for i in range(0, len(data), chunk):
            await self.write(handle, data[i:i + chunk])
        return await self.close_and_update(handle)

    async def read_trust_list(self) -> bytes:
        handle = await self.open(0x01)
        data = b""
        while part := await self.tl("Read", ua.Variant(handle, ua.VariantType.UInt32),
                                    ua.Variant(4096, ua.VariantType.Int32)):
            data += part
        await self.tl("Close", ua.Variant(handle, ua.VariantType.UInt32))
        return data

    async def csr(self, regenerate: bool, nonce: bytes | None = None, subject: str = "") -> bytes:
        return bytes(await self.config.call_method(
            M.CreateSigningRequest.node_id(), APP_GROUP_ID, RSA_SHA256_TYPE, ua.Variant(subject, ua.VariantType.String),
            ua.Variant(regenerate, ua.VariantType.Boolean),
            ua.Variant(secrets.token_bytes(32) if nonce is None else nonce, ua.VariantType.ByteString)))

    async def update_certificate(self, cert: bytes, issuers: list[bytes], key_format: str = "",
                                 key: bytes = b"") -> bool:
        return bool(await self.config.call_method(
            M.UpdateCertificate.node_id(), APP_GROUP_ID, RSA_SHA256_TYPE, ua.Variant(cert, ua.VariantType.ByteString),
            ua.Variant(issuers, ua.VariantType.ByteString), ua.Variant(key_format, ua.VariantType.String),
            ua.Variant(key, ua.VariantType.ByteString)))

    async def apply(self) -> None:
        await self.config.call_method(M.ApplyChanges.node_id())

    async def cancel(self) -> None:
        await self.config.call_method(M.CancelChanges.node_id())

    async def rejected(self) -> list[bytes]:
        return list(await self.config.call_method(M.GetRejectedList.node_id()) or [])
