"""An ECC application certificate issued by the engine and pushed with otpki's push client (issue 12 §5).

The PLC simulator (asyncua) reports RsaSha256 and the two NIST ECC types; the push client reads them, asks
for a P-384 CSR, the engine issues from it (a P-384 leaf, SHA-384), UpdateCertificate/ApplyChanges install it.
The PLC's SecureChannels keep the RSA certificate: asyncua has no ECC SecurityPolicies.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from opcua_gds.access import AccessConfig, GdsRole, PasswordUser, hash_password
from opcua_gds.nodeids import CertificateTypes
from opcua_gds.push.client import PushClient, connect_push_session, expect_certificate, fingerprint
from opcua_gds.testing import issue_app_identity
from simulators.plc import PlcSimulator
from trustlists.models import KeyType
from trustlists.testing import free_port, make_engine

ACCESS = AccessConfig(users=[
    PasswordUser(name="plc-admin", password_hash=hash_password("plc-admin-pw"), roles=[GdsRole.SECURITY_ADMIN])])
T = CertificateTypes


async def test_an_engine_issued_ecc_certificate_is_pushed_and_stored(tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "pki")
    engine.hierarchy.initialize(actor="test")
    pusher = issue_app_identity(engine, tmp_path / "certs", "otpki-push", "urn:otpki:push")
    plc = PlcSimulator("plc-ecc", f"opc.tcp://127.0.0.1:{free_port()}/plc", tmp_path / "plc-pki", ACCESS)
    owner = engine.registry.register(group="opcua-application", name="plc-ecc", application_uri=plc.application_uri,
                                     dns_names=["localhost"], ip_addresses=["127.0.0.1"], actor="test")
    await plc.start()
    try:
        assert plc.push is not None
        rsa_der = plc.certificate_der
        client = await connect_push_session(
            plc.endpoint, client_cert_path=pusher.cert_path, client_key_path=pusher.key_path,
            client_app_uri=pusher.application_uri, username="plc-admin", password="plc-admin-pw",
            server_check=expect_certificate(fingerprint(rsa_der)))
        try:
            push = PushClient(client)
            caps = await push.read_capabilities()
            assert caps.certificate_types == [T.RsaSha256ApplicationCertificateType,
                                              T.EccNistP256ApplicationCertificateType,
                                              T.EccNistP384ApplicationCertificateType]
            await push.write_trust_list(engine.trustlists.get("opcua-application").content, caps.max_trust_list_size)
            csr = await push.create_signing_request(True, certificate_type=T.EccNistP384ApplicationCertificateType)
            issued = engine.authority.issue_from_csr(csr, owner_id=owner.id, actor="push", delivered=False)
            assert issued.record.key_type is KeyType.EC_P384
            assert await push.update_certificate(issued.certificate_der, list(issued.chain_der[:-1]),
                                                 certificate_type=T.EccNistP384ApplicationCertificateType)
            await push.apply_changes()
        finally:
            await client.disconnect()
        assert plc.push.ecc_certificates == {T.EccNistP384ApplicationCertificateType: issued.certificate_der}
        cert = x509.load_der_x509_certificate(issued.certificate_der)
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
        assert cert.signature_hash_algorithm is not None and cert.signature_hash_algorithm.name == "sha384"
        assert plc.certificate_der == rsa_der  # the channels' certificate is the RSA one still
    finally:
        await plc.stop()
        engine.close()
