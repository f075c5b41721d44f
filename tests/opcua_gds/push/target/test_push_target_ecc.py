"""ECC application certificates on a push target (issue 12 §5): reported, requested, updated, applied, stored.

asyncua has no ECC SecurityPolicies, so the target keeps using its RSA certificate on every SecureChannel; its
EccNistP256/EccNistP384 certificates are managed like the RSA one (CreateSigningRequest with a new EC key,
UpdateCertificate, ApplyChanges, own/ folder, restart) and reported in the group's CertificateTypes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.ua import uaerrors
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from opcua_gds.nodeids import CertificateTypes, ServerConfigurationIds
from opcua_gds.push.target.certs import key_to_pem
from simulators.plc import PlcSimulator
from tests.opcua_gds.push.target.pki import APP_GROUP_ID, ClientIdentity, M, Push, TestCa, access_config, connect
from trustlists.testing import free_port

RSA = ua.NodeId(CertificateTypes.RsaSha256ApplicationCertificateType)
P256 = ua.NodeId(CertificateTypes.EccNistP256ApplicationCertificateType)
P384 = ua.NodeId(CertificateTypes.EccNistP384ApplicationCertificateType)
NULL = ua.NodeId()
CURVES = {P256: (ec.SECP256R1, "sha256"), P384: (ec.SECP384R1, "sha384")}
Factory = Callable[..., Awaitable[PlcSimulator]]


@pytest.fixture
async def make_plc(tmp_path: Path) -> AsyncIterator[Factory]:
    started: list[PlcSimulator] = []

    async def make(name: str = "plc-ecc") -> PlcSimulator:
        plc = PlcSimulator(name, f"opc.tcp://127.0.0.1:{free_port()}/plc", tmp_path / name, access_config())
        await plc.start()
        started.append(plc)
        return plc

    yield make
    for plc in started:
        await plc.stop()


@pytest.fixture(scope="module")
def ca() -> TestCa:
    return TestCa("ECC test root")


@pytest.fixture
def admin(ca: TestCa, tmp_path: Path) -> ClientIdentity:
    return ca.client(tmp_path / "clients", "admin")


async def csr(push: Push, type_id: ua.NodeId, regenerate: bool = True) -> x509.CertificateSigningRequest:
    der = await push.config.call_method(
        M.CreateSigningRequest.node_id(), APP_GROUP_ID, type_id, ua.Variant("", ua.VariantType.String),
        ua.Variant(regenerate, ua.VariantType.Boolean), ua.Variant(secrets.token_bytes(32), ua.VariantType.ByteString))
    return x509.load_der_x509_csr(der)


async def update(push: Push, type_id: ua.NodeId, cert: bytes, issuers: list[bytes], key_format: str = "",
                 key: bytes = b"") -> Any:
    return await push.config.call_method(
        M.UpdateCertificate.node_id(), APP_GROUP_ID, type_id, ua.Variant(cert, ua.VariantType.ByteString),
        ua.Variant(issuers, ua.VariantType.ByteString), ua.Variant(key_format, ua.VariantType.String),
        ua.Variant(key, ua.VariantType.ByteString))


async def disconnect(client: Client) -> None:
    with contextlib.suppress(Exception):
        await client.disconnect()


async def bootstrapped(plc: PlcSimulator, admin: ClientIdentity, ca: TestCa) -> tuple[Client, Push]:
    """A SecurityAdmin session on a PLC whose trust list holds the test CA (applied)."""
    client = await connect(plc.endpoint, admin)
    push = Push(client)
    assert await push.push_trust_list(ca.trust_list())
    await push.apply()
    await disconnect(client)
    client = await connect(plc.endpoint, admin)  # the apply closes channels the new trust list re-evaluates
    return client, Push(client)


@pytest.mark.parametrize("type_id", [P256, P384], ids=["p256", "p384"])
async def test_an_ecc_certificate_is_requested_updated_applied_stored_and_reported(
        make_plc: Factory, ca: TestCa, admin: ClientIdentity, type_id: ua.NodeId) -> None:
    plc = await make_plc()
    rsa_der = plc.certificate_der
    client, push = await bootstrapped(plc, admin, ca)
    try:
        types = await client.get_node(
            ua.NodeId(ServerConfigurationIds.DefaultApplicationGroup_CertificateTypes)).read_value()
        assert types == [RSA, P256, P384]

        request = await csr(push, type_id)
        curve, digest = CURVES[type_id]
        key = request.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, curve)
        assert request.is_signature_valid and request.signature_hash_algorithm is not None
        assert request.signature_hash_algorithm.name == digest
        san = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [plc.application_uri]

        ecc_der = ca.sign_csr(request.public_bytes(serialization.Encoding.DER))
        assert await update(push, type_id, ecc_der, [ca.der])
        assert plc.push is not None and plc.push.ecc_certificates == {}  # staged, not active
        await push.apply()
        assert plc.push.ecc_certificates == {type_id.Identifier: ecc_der}
        assert plc.certificate_der == rsa_der  # the channels keep the RSA certificate
        endpoints = await Client(plc.endpoint, timeout=5).connect_and_get_server_endpoints()
        assert {bytes(e.ServerCertificate) for e in endpoints} == {rsa_der}

        # CreateSigningRequest without a new key now signs with the active ECC key.
        again = await csr(push, type_id, regenerate=False)
        assert again.public_key() == x509.load_der_x509_certificate(ecc_der).public_key()
    finally:
        await disconnect(client)

    key_files = list((plc.pki_dir / "own" / "private").iterdir())
    assert len(key_files) == 2 and all(os.stat(f).st_mode & 0o777 == 0o600 for f in key_files)
    await plc.stop()  # a restart from the PKI folder keeps both certificates, each in its slot
    await plc.start()
    assert plc.certificate_der == rsa_der
    assert plc.push is not None and plc.push.ecc_certificates == {type_id.Identifier: ecc_der}


async def test_a_pushed_ecc_key_and_a_null_type_take_the_slot_of_the_certificates_key(
        make_plc: Factory, ca: TestCa, admin: ClientIdentity) -> None:
    plc = await make_plc()
    client, push = await bootstrapped(plc, admin, ca)
    try:
        key = ec.generate_private_key(ec.SECP384R1())
        cert = ca.issue_for_key(key, "plc-ecc", plc.application_uri)
        assert await update(push, NULL, cert, [ca.der], "PEM", key_to_pem(key))
        await push.apply()
        assert plc.push is not None and plc.push.ecc_certificates == {P384.Identifier: cert}
    finally:
        await disconnect(client)


async def test_types_that_do_not_fit_are_refused_with_the_specs_codes(make_plc: Factory, ca: TestCa,
                                                                      admin: ClientIdentity) -> None:
    plc = await make_plc()
    client, push = await bootstrapped(plc, admin, ca)
    try:
        with pytest.raises(uaerrors.BadInvalidArgument):  # no P-256 key yet: a CSR needs a new one
            await csr(push, P256, regenerate=False)
        p256 = ca.sign_csr((await csr(push, P256)).public_bytes(serialization.Encoding.DER))
        for type_id in (RSA, P384):  # an EC P-256 certificate named as RSA or as P-384
            with pytest.raises(uaerrors.BadCertificateInvalid):
                await update(push, type_id, p256, [ca.der])
        rsa_csr = await csr(push, RSA)
        rsa_cert = ca.sign_csr(rsa_csr.public_bytes(serialization.Encoding.DER))
        with pytest.raises(uaerrors.BadCertificateInvalid):  # an RSA certificate named as ECC
            await update(push, P256, rsa_cert, [ca.der])
        with pytest.raises(uaerrors.BadInvalidArgument):  # an abstract type names no curve
            await csr(push, ua.NodeId(CertificateTypes.EccApplicationCertificateType))
        with pytest.raises(uaerrors.BadSecurityChecksFailed):  # a P-256 certificate for a key it never made
            other = ca.issue_for_key(ec.generate_private_key(ec.SECP256R1()), "x",
                                     plc.application_uri)
            await update(push, P256, other, [ca.der])
        assert plc.push is not None and plc.push.ecc_certificates == {}
    finally:
        await disconnect(client)


async def test_a_target_configured_for_rsa_only_reports_and_accepts_rsa_only(tmp_path: Path, ca: TestCa,
                                                                            admin: ClientIdentity) -> None:
    from asyncua import Server

    from opcua_gds.push.target import install_push_management
    from opcua_gds.push.target.certs import self_signed

    server = Server()
    await server.init()
    url = f"opc.tcp://127.0.0.1:{free_port()}/rsa-only"
    server.set_endpoint(url)
    server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
    der, key = self_signed("rsa-only", "urn:otpki:plc:rsa-only", ["localhost", "127.0.0.1"])
    await server.load_certificate(der, format="der")
    await server.load_private_key(key_to_pem(key), format="pem")
    await install_push_management(server, pki_dir=tmp_path / "rsa-only", access=access_config(),
                                  certificate_types=[CertificateTypes.RsaSha256ApplicationCertificateType])
    await server.start()
    client = await connect(url, admin)
    try:
        push = Push(client)
        types = await client.get_node(
            ua.NodeId(ServerConfigurationIds.DefaultApplicationGroup_CertificateTypes)).read_value()
        assert types == [RSA]
        with pytest.raises(uaerrors.BadInvalidArgument):
            await csr(push, P256)
        ecc_key = ec.generate_private_key(ec.SECP256R1())
        cert = ca.issue_for_key(ecc_key, "rsa-only", "urn:otpki:plc:rsa-only")
        with pytest.raises(uaerrors.BadCertificateInvalid):  # null type: the key's type, not supported here
            await update(push, NULL, cert, [ca.der], "PEM", key_to_pem(ecc_key))
    finally:
        await disconnect(client)
        await server.stop()
    with pytest.raises(ValueError, match="RsaSha256"):
        await install_push_management(server, pki_dir=tmp_path / "x", certificate_types=[
            CertificateTypes.EccNistP256ApplicationCertificateType])


class Received:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def event_notification(self, event: Any) -> None:
        self.events.append(event)


async def test_applying_an_ecc_certificate_raises_certificate_updated_with_its_type(
        make_plc: Factory, ca: TestCa, admin: ClientIdentity) -> None:
    plc = await make_plc()
    client, push = await bootstrapped(plc, admin, ca)
    try:
        received = Received()
        subscription = await client.create_subscription(50, received)
        updated = client.get_node(ua.NodeId(ua.ObjectIds.CertificateUpdatedAuditEventType))
        await subscription.subscribe_events(client.nodes.server, updated)
        ecc_der = ca.sign_csr((await csr(push, P256)).public_bytes(serialization.Encoding.DER))
        assert await update(push, P256, ecc_der, [ca.der])
        await push.apply()
        deadline = asyncio.get_running_loop().time() + 20
        while not received.events:
            assert asyncio.get_running_loop().time() < deadline, "no CertificateUpdatedAuditEventType"
            await asyncio.sleep(0.05)
        (event,) = received.events
        assert event.CertificateType == P256
        assert event.CertificateGroup == ua.NodeId(ServerConfigurationIds.DefaultApplicationGroup)
    finally:
        await disconnect(client)
