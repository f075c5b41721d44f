"""Push management on an asyncua server (opcua_gds.push.target) over real SignAndEncrypt sessions."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua import uaerrors
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from opcua_gds.nodeids import ServerConfigurationIds
from opcua_gds.push.target.certs import is_self_signed, thumbprint
from opcua_gds.testing import issue_app_identity
from opcua_gds.trustlist_binary import decode_trustlist
from simulators.plc import PlcSimulator
from tests.opcua_gds.push.target.pki import (
    ClientIdentity,
    Push,
    TestCa,
    access_config,
    connect,
    self_signed_client,
)
from trustlists.models import TrustListContent, TrustListMask
from trustlists.testing import eventually, free_port, make_engine

WAIT = 15.0  # upper bound for the PLC to act on an ApplyChanges, on a loaded 2-core machine

Factory = Callable[..., Awaitable[PlcSimulator]]


@pytest.fixture
async def make_plc(tmp_path: Path) -> AsyncIterator[Factory]:
    started: list[PlcSimulator] = []

    async def make(name: str = "plc-1", **kwargs: object) -> PlcSimulator:
        plc = PlcSimulator(name, f"opc.tcp://127.0.0.1:{free_port()}/plc", tmp_path / name, access_config(),
                           **kwargs)  # type: ignore[arg-type]
        await plc.start()
        started.append(plc)
        return plc

    yield make
    for plc in started:
        await plc.stop()


@pytest.fixture(scope="module")
def ca() -> TestCa:
    return TestCa()


@pytest.fixture
def admin(ca: TestCa, tmp_path: Path) -> ClientIdentity:
    return ca.client(tmp_path / "clients", "admin")


async def _disconnect(client: Client) -> None:
    with contextlib.suppress(Exception):
        await client.disconnect()


def _channel_certificates(plc: PlcSimulator) -> list[tuple[bytes | None, bytes | None]]:
    """(server certificate, client certificate) of each SecureChannel the PLC holds open."""
    assert plc.server is not None and plc.server.bserver is not None
    policies = [p.processor._connection.security_policy for p in plc.server.bserver.clients]
    return [(policy.host_certificate, policy.peer_certificate) for policy in policies]


async def _bootstrap(plc: PlcSimulator, admin: ClientIdentity, ca: TestCa) -> None:
    """First push: the CA (and its CRL) as the trust list, applied."""
    client = await connect(plc.endpoint, admin)
    try:
        push = Push(client)
        assert await push.push_trust_list(ca.trust_list())
        await push.apply()
    finally:
        await _disconnect(client)
    # ApplyChanges re-evaluates the channels opened under the old trust list after its response; the one it
    # was called on is gone once the PLC has seen it close, so none is left for that to act on.
    await eventually(lambda: not _channel_certificates(plc), "the PLC to drop the bootstrap channel", timeout=WAIT)


async def test_happy_path_push_trust_list_and_certificate(make_plc: Factory, ca: TestCa,
                                                          admin: ClientIdentity) -> None:
    plc = await make_plc()
    factory_der = plc.certificate_der
    client = await connect(plc.endpoint, admin)
    push = Push(client)
    try:
        assert await push.push_trust_list(ca.trust_list())
        staged = decode_trustlist(await push.read_trust_list())
        assert staged.trusted_certificates == [ca.der] and staged.trusted_crls == [ca.crl]

        csr = await push.csr(True, secrets.token_bytes(32), subject="CN=plc-1,O=plant")
        new_der = ca.sign_csr(csr)
        assert await push.update_certificate(new_der, [ca.der])
        assert plc.certificate_der == factory_der  # staged, not active
        assert factory_der in {host for host, _peer in _channel_certificates(plc)}
        await push.apply()

        # The server closes the channel that used the old certificate, after the ApplyChanges response.
        await eventually(lambda: factory_der not in {host for host, _peer in _channel_certificates(plc)},
                         "the PLC to close the channel of its old certificate", timeout=WAIT)
        with pytest.raises((ConnectionError, asyncio.TimeoutError, ua.UaError)):
            await asyncio.wait_for(client.nodes.server.read_browse_name(), 5)
    finally:
        await _disconnect(client)

    assert plc.certificate_der == new_der
    probe = Client(plc.endpoint, timeout=5)
    endpoints = await probe.connect_and_get_server_endpoints()
    assert {bytes(e.ServerCertificate) for e in endpoints} == {new_der}

    again = await connect(plc.endpoint, admin)  # a new SecureChannel with the new certificate, CA-trusted client
    try:
        assert await again.nodes.server.read_browse_name()
        formats = await again.get_node(ua.NodeId(ServerConfigurationIds.SupportedPrivateKeyFormats)).read_value()
        assert formats == ["PEM", "PFX"]
        types = await again.get_node(
            ua.NodeId(ServerConfigurationIds.DefaultApplicationGroup_CertificateTypes)).read_value()
        assert types == [ua.NodeId(12560), ua.NodeId(23538), ua.NodeId(23539)]  # RSA (channels) and the ECC types
    finally:
        await _disconnect(again)

    key_file = next((plc.pki_dir / "own" / "private").iterdir())
    assert os.stat(key_file).st_mode & 0o777 == 0o600
    assert any((plc.pki_dir / "trusted" / "certs").iterdir())

    await plc.stop()  # a restart from the same PKI folder keeps the pushed identity and trust list
    await plc.start()
    assert plc.certificate_der == new_der
    assert plc.push is not None and plc.push.trust_list.trusted_certificates == [ca.der]
    endpoints = await Client(plc.endpoint, timeout=5).connect_and_get_server_endpoints()
    assert bytes(endpoints[0].ServerCertificate) == new_der


async def test_update_certificate_with_pushed_pem_and_pfx_key(make_plc: Factory, ca: TestCa,
                                                              admin: ClientIdentity) -> None:
    plc = await make_plc()
    client = await connect(plc.endpoint, admin)
    try:
        push = Push(client)
        assert await push.push_trust_list(ca.trust_list())
        key = rsa.generate_private_key(65537, 2048)
        cert = ca.issue_for_key(key, "plc-1", "urn:otpki:plc:plc-1")
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        assert await push.update_certificate(cert, [ca.der], "PEM", pem)
        from cryptography.hazmat.primitives.serialization import pkcs12

        pfx = pkcs12.serialize_key_and_certificates(b"plc", key, None, None, serialization.NoEncryption())
        assert await push.update_certificate(cert, [ca.der], "PFX", pfx)
        other = rsa.generate_private_key(65537, 2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        with pytest.raises(uaerrors.BadSecurityChecksFailed):  # key of another certificate
            await push.update_certificate(cert, [ca.der], "PEM", other)
        with pytest.raises(uaerrors.BadSecurityChecksFailed):  # no key, and not ours
            await push.update_certificate(cert, [ca.der])
        with pytest.raises((uaerrors.BadCertificateInvalid, uaerrors.BadInvalidArgument)):
            await push.update_certificate(b"garbage", [ca.der])
        await push.apply()
    finally:
        await _disconnect(client)
    await eventually(lambda: plc.certificate_der == cert, "the PLC to present the pushed certificate", timeout=WAIT)


async def test_refusals(make_plc: Factory, ca: TestCa, admin: ClientIdentity, tmp_path: Path) -> None:
    plc = await make_plc()
    operator = await connect(plc.endpoint, admin, "operator")
    try:
        with pytest.raises(uaerrors.BadUserAccessDenied):
            await Push(operator).csr(False)
        with pytest.raises(uaerrors.BadUserAccessDenied):
            await Push(operator).open(0x06)
    finally:
        await _disconnect(operator)
    signed = await connect(plc.endpoint, admin, mode=ua.MessageSecurityMode.Sign)
    try:
        with pytest.raises(uaerrors.BadSecurityModeInsufficient):
            await Push(signed).csr(False)
        with pytest.raises(uaerrors.BadSecurityModeInsufficient):
            await Push(signed).apply()
    finally:
        await _disconnect(signed)

    client = await connect(plc.endpoint, admin)
    push = Push(client)
    try:
        with pytest.raises(uaerrors.BadNothingToDo):
            await push.apply()
        with pytest.raises(uaerrors.BadInvalidArgument):  # RegeneratePrivateKey needs a 32-byte nonce
            await push.csr(True, b"short")
        with pytest.raises(uaerrors.BadNotSupported):
            await push.open(0x02)
        handle = await push.open(0x06)
        with pytest.raises(uaerrors.BadInvalidState):
            await push.apply()
        with pytest.raises(uaerrors.BadInvalidState):  # one writer at a time
            await push.open(0x06)
        await push.tl("Close", ua.Variant(handle, ua.VariantType.UInt32))
        handle = await push.open(0x06)
        await push.write(handle, b"\x01\x02\x03")
        with pytest.raises((uaerrors.BadInvalidArgument, uaerrors.BadCertificateInvalid)):
            await push.close_and_update(handle)

        other_ca = TestCa("Foreign CA")
        assert await push.push_trust_list(ca.trust_list())
        foreign = other_ca.sign_csr(await push.csr(False))  # our key, an issuer nobody trusts
        with pytest.raises(uaerrors.BadCertificateChainIncomplete):
            await push.update_certificate(foreign, [other_ca.der])
        with pytest.raises(uaerrors.BadCertificateChainIncomplete):
            await push.update_certificate(foreign, [])
        stranger_key = rsa.generate_private_key(65537, 2048)
        with pytest.raises(uaerrors.BadSecurityChecksFailed):  # a certificate for a key we do not hold
            await push.update_certificate(ca.issue_for_key(stranger_key, "x", "urn:x"), [ca.der])

        with pytest.raises(uaerrors.BadCertificateInvalid):
            await push.tl("AddCertificate", ua.Variant(admin.cert_der, ua.VariantType.ByteString),
                          ua.Variant(False, ua.VariantType.Boolean))
        with pytest.raises(uaerrors.BadCertificateInvalid):  # CAs only through Write
            await push.tl("AddCertificate", ua.Variant(other_ca.der, ua.VariantType.ByteString),
                          ua.Variant(True, ua.VariantType.Boolean))
        await push.tl("AddCertificate", ua.Variant(admin.cert_der, ua.VariantType.ByteString),
                      ua.Variant(True, ua.VariantType.Boolean))
        content = decode_trustlist(await push.read_trust_list())
        assert admin.cert_der in content.trusted_certificates
        await push.tl("RemoveCertificate", ua.Variant(thumbprint(admin.cert_der), ua.VariantType.String),
                      ua.Variant(True, ua.VariantType.Boolean))
        with pytest.raises(uaerrors.BadInvalidArgument):
            await push.tl("RemoveCertificate", ua.Variant("00" * 20, ua.VariantType.String),
                          ua.Variant(True, ua.VariantType.Boolean))
        await push.cancel()
        with pytest.raises(uaerrors.BadNothingToDo):
            await push.apply()
    finally:
        await _disconnect(client)


async def test_oversize_trust_list(make_plc: Factory, ca: TestCa, admin: ClientIdentity) -> None:
    plc = await make_plc(max_trust_list_size=1024)
    client = await connect(plc.endpoint, admin)
    try:
        push = Push(client)
        assert await client.get_node(ua.NodeId(ServerConfigurationIds.MaxTrustListSize)).read_value() == 1024
        handle = await push.open(0x06)
        await push.write(handle, b"\x00" * 1000)
        with pytest.raises(uaerrors.BadEncodingLimitsExceeded):
            await push.write(handle, b"\x00" * 100)
    finally:
        await _disconnect(client)


async def test_untrusted_client_is_refused_and_listed(make_plc: Factory, ca: TestCa, admin: ClientIdentity,
                                                      tmp_path: Path) -> None:
    plc = await make_plc()
    await _bootstrap(plc, admin, ca)
    stranger = self_signed_client(tmp_path / "clients", "stranger")
    with pytest.raises(uaerrors.BadSecurityChecksFailed):  # CreateSession refused
        bad = await connect(plc.endpoint, stranger, None)
        await _disconnect(bad)
    client = await connect(plc.endpoint, admin)  # the CA-issued admin is still accepted
    try:
        assert stranger.cert_der in await Push(client).rejected()
    finally:
        await _disconnect(client)


async def test_a_client_that_sends_its_chain_is_accepted_with_only_the_root_trusted(
        make_plc: Factory, admin: ClientIdentity, tmp_path: Path) -> None:
    """OPC 10000-6 6.2.3: the client sends its issuing CA after its certificate; the PLC trusts the root alone."""
    engine = make_engine(tmp_path / "engine")
    try:
        engine.hierarchy.initialize(actor="test")
        app = issue_app_identity(engine, tmp_path / "app", "chain-hmi", "urn:test:chain-hmi")
        content = engine.trustlists.get("opcua-application").content
        roots = [d for d in content.issuer_certificates if is_self_signed(x509.load_der_x509_certificate(d))]
        issuing_ca = engine.hierarchy.issuing_ca_for("opcua-application", None).certificate_der
    finally:
        engine.close()
    root_only = TrustListContent(specified_lists=int(TrustListMask.ALL), trusted_certificates=roots,
                                 trusted_crls=[*content.trusted_crls, *content.issuer_crls])
    assert issuing_ca not in root_only.trusted_certificates

    plc = await make_plc()
    client = await connect(plc.endpoint, admin)  # the first push, trusted on first use
    try:
        push = Push(client)
        assert await push.push_trust_list(root_only)
        await push.apply()
    finally:
        await _disconnect(client)

    async def hmi(chain: list[bytes]) -> Client:
        hmi = Client(plc.endpoint, timeout=5)
        hmi.application_uri = app.application_uri
        await hmi.set_security(SecurityPolicyBasic256Sha256, str(app.cert_path), str(app.key_path),
                               mode=ua.MessageSecurityMode.SignAndEncrypt, certificate_chain=chain)
        await hmi.connect()
        return hmi

    with pytest.raises(uaerrors.BadSecurityChecksFailed):  # the leaf alone: the chain is incomplete
        await _disconnect(await hmi([]))
    with_chain = await hmi([issuing_ca])
    try:
        assert await with_chain.nodes.server.read_browse_name()
    finally:
        await _disconnect(with_chain)
