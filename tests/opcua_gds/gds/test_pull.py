"""Pull certificate management (CertificateDirectory methods) over real asyncua SignAndEncrypt sessions."""

from __future__ import annotations

import hashlib
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua
from asyncua.ua import uaerrors
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from opcua_gds.gds import pull, trustlist_file
from opcua_gds.nodeids import (
    GDS_NAMESPACE_URI,
    CertificateDirectoryMethods,
    CertificateGroups,
    CertificateTypes,
    GdsObjects,
)
from opcua_gds.testing import AppIdentity, connect, issue_app_identity
from opcua_gds.trustlist_binary import decode_trustlist
from tests.opcua_gds.gds.gds_fixture import PASSWORDS, RunningGds, running_gds
from trustlists.models import TrustListMask
from trustlists.testing import foreign_engine, make_csr, new_key, store_snapshot

M = CertificateDirectoryMethods
RSA_TYPE = ua.NodeId(CertificateTypes.RsaSha256ApplicationCertificateType)
P256_TYPE = ua.NodeId(CertificateTypes.EccNistP256ApplicationCertificateType)
NULL = ua.NodeId()
NO_NAMES = ua.Variant([], ua.VariantType.String, is_array=True)


# One GDS for the module (starting one is most of a test's time): its tests run on the module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")
_app_numbers = itertools.count(1)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gds(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningGds]:
    async for running in running_gds(tmp_path_factory.mktemp("gds"), installers=[pull.install, trustlist_file.install]):
        yield running


@pytest.fixture
def apps(gds: RunningGds) -> dict[str, AppIdentity]:
    """Applications of this test's own: what a test requests, issues or revokes for them meets no other test."""
    n = next(_app_numbers)
    certs = gds.tmp / "certs" / str(n)
    return {"scada": issue_app_identity(gds.engine, certs, f"scada-{n}", f"urn:plant:scada-{n}"),
            "hmi": issue_app_identity(gds.engine, certs, f"hmi-{n}", f"urn:plant:hmi-{n}")}


class Gds:
    """A client session on the GDS with the pull methods at hand."""

    def __init__(self, client: Client, idx: int) -> None:
        self.client = client
        self.idx = idx
        self.directory = client.get_node(ua.NodeId(GdsObjects.Directory, idx))

    async def call(self, spec: Any, *args: Any) -> Any:
        return await self.directory.call_method(spec.node_id(self.idx), *args)

    def group(self, group: GdsObjects = GdsObjects.DefaultApplicationGroup) -> ua.NodeId:
        return ua.NodeId(int(group), self.idx)

    async def read_trust_list(self, trust_list_id: ua.NodeId, masks: int = TrustListMask.ALL) -> bytes:
        node = self.client.get_node(trust_list_id)
        group = CertificateGroups.GdsDefaultApplicationGroup
        handle = await node.call_method(group.method("OpenWithMasks").node_id(self.idx),
                                        ua.Variant(masks, ua.VariantType.UInt32))
        data = b""
        while True:
            chunk = await node.call_method(group.method("Read").node_id(self.idx),
                                           ua.Variant(handle, ua.VariantType.UInt32),
                                           ua.Variant(100, ua.VariantType.Int32))
            if not chunk:
                break
            data += chunk
        await node.call_method(group.method("Close").node_id(self.idx), ua.Variant(handle, ua.VariantType.UInt32))
        return data


async def session(gds: RunningGds, app: AppIdentity, user: str | None = None,
                  mode: ua.MessageSecurityMode = ua.MessageSecurityMode.SignAndEncrypt) -> Gds:
    password = PASSWORDS[user][0] if user else None
    client = await connect(gds.url, app, mode=mode, username=user, password=password)
    return Gds(client, await client.get_namespace_index(GDS_NAMESPACE_URI))


def app_id(gds: RunningGds, app: AppIdentity) -> ua.NodeId:
    assert gds.gds.context is not None
    return gds.gds.context.application_id(app.owner_id)


def csr_for(app: AppIdentity, key_kind: str = "rsa2048", uri: str | None = None) -> tuple[bytes, Any]:
    key = new_key(key_kind)
    return make_csr(app.name, uris=[uri or app.application_uri], dns=["localhost"], key=key, pem=False), key


def public_der(obj: Any) -> bytes:
    return obj.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


async def pull_with_csr(s: Gds, gds: RunningGds, app: AppIdentity, key_kind: str, type_id: ua.NodeId
                        ) -> tuple[x509.Certificate, list[bytes], Any]:
    csr, key = csr_for(app, key_kind)
    request_id = await s.call(M.StartSigningRequest, app_id(gds, app), s.group(), type_id, csr)
    assert request_id.NamespaceIndex == s.idx and request_id.NodeIdType == ua.NodeIdType.Guid
    cert_der, private_key, issuers = await s.call(M.FinishRequest, app_id(gds, app), request_id)
    assert not private_key
    cert = x509.load_der_x509_certificate(cert_der)
    assert public_der(cert) == public_der(key)
    return cert, issuers, key


# -- the full flow ------------------------------------------------------------------------------------
@pytest.mark.parametrize("user", [None, "ca-admin"])
async def test_signing_request_rsa_and_ec(gds: RunningGds, apps: dict[str, AppIdentity], user: str | None) -> None:
    app = apps["scada"]
    s = await session(gds, app, user)  # None: anonymous on the app's own channel (SelfAdmin)
    try:
        rsa_cert, issuers, _ = await pull_with_csr(s, gds, app, "rsa2048", RSA_TYPE)
        uris = rsa_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert uris.get_values_for_type(x509.UniformResourceIdentifier) == [app.application_uri]
        assert issuers and x509.load_der_x509_certificate(issuers[0]).subject == rsa_cert.issuer
        ec_cert, _, _ = await pull_with_csr(s, gds, app, "ec-p256", P256_TYPE)
        _, _, _ = await pull_with_csr(s, gds, app, "ec-p256", NULL)  # null type: the CM chooses
        # GetCertificates lists the app's live certificates with their types.
        types, certs = await s.call(M.GetCertificates, app_id(gds, app), NULL)
        by_der = dict(zip(certs, types, strict=True))
        assert by_der[rsa_cert.public_bytes(serialization.Encoding.DER)] == RSA_TYPE
        assert by_der[ec_cert.public_bytes(serialization.Encoding.DER)] == P256_TYPE
        assert app.cert_der in by_der
        groups = await s.call(M.GetCertificateGroups, app_id(gds, app))
        assert groups == [s.group()]
        assert await s.call(M.GetCertificateStatus, app_id(gds, app), s.group(), NULL) is False
        trust_list_id = await s.call(M.GetTrustList, app_id(gds, app), NULL)
        assert trust_list_id == ua.NodeId(GdsObjects.DefaultApplicationGroup_TrustList, s.idx)
        status, validity = await s.call(M.CheckRevocationStatus, rsa_cert.public_bytes(serialization.Encoding.DER))
        assert status.is_good()
        assert validity <= rsa_cert.not_valid_after_utc
    finally:
        await s.client.disconnect()


@pytest.mark.parametrize("fmt", ["PEM", "PFX"])
async def test_new_key_pair_request(gds: RunningGds, apps: dict[str, AppIdentity], fmt: str) -> None:
    app = apps["scada"]
    s = await session(gds, app)
    try:
        password = "pfx-secret" if fmt == "PFX" else ""
        request_id = await s.call(
            M.StartNewKeyPairRequest, app_id(gds, app), NULL, RSA_TYPE, "CN=scada-1/O=plant",
            ua.Variant(["localhost", "127.0.0.1"], ua.VariantType.String, is_array=True), fmt, password)
        cert_der, key_data, issuers = await s.call(M.FinishRequest, app_id(gds, app), request_id)
        cert = x509.load_der_x509_certificate(cert_der)
        if fmt == "PEM":
            key = serialization.load_pem_private_key(key_data, None)
        else:
            key, pfx_cert, _extra = pkcs12.load_key_and_certificates(key_data, password.encode())
            assert pfx_cert is not None and pfx_cert == cert
        assert key is not None and public_der(key) == public_der(cert)
        assert issuers
        # The key is handed out once: a second Finish is refused.
        with pytest.raises(uaerrors.BadInvalidArgument):
            await s.call(M.FinishRequest, app_id(gds, app), request_id)
        with pytest.raises(uaerrors.BadInvalidArgument):  # unknown private key format
            await s.call(M.StartNewKeyPairRequest, app_id(gds, app), NULL, NULL, "", NO_NAMES, "DER", "")
        with pytest.raises(uaerrors.BadInvalidArgument):  # PFX needs a password
            await s.call(M.StartNewKeyPairRequest, app_id(gds, app), NULL, NULL, "", NO_NAMES, "PFX", "")
    finally:
        await s.client.disconnect()


@pytest.fixture
def manual_approval(gds: RunningGds) -> Iterator[None]:
    """The application group needs an approval for a while (the module's GDS gets its policy back after)."""
    groups = gds.engine.config.groups
    policy = groups["opcua-application"]
    groups["opcua-application"] = policy.model_copy(update={"auto_approve": False})
    try:
        yield
    finally:
        groups["opcua-application"] = policy


async def test_manual_approval(gds: RunningGds, apps: dict[str, AppIdentity], manual_approval: None) -> None:
    app = apps["scada"]
    s = await session(gds, app)
    try:
        csr, _key = csr_for(app)
        request_id = await s.call(M.StartSigningRequest, app_id(gds, app), NULL, NULL, csr)
        with pytest.raises(uaerrors.BadRequestNotComplete):
            await s.call(M.FinishRequest, app_id(gds, app), request_id)
        gds.engine.requests.approve(str(request_id.Identifier), actor="alice")
        cert_der, _pk, _issuers = await s.call(M.FinishRequest, app_id(gds, app), request_id)
        assert x509.load_der_x509_certificate(cert_der)
        # A rejected request answers Bad_RequestNotAllowed.
        csr, _key = csr_for(app)
        request_id = await s.call(M.StartSigningRequest, app_id(gds, app), NULL, NULL, csr)
        gds.engine.requests.reject(str(request_id.Identifier), actor="alice", reason="not on the list")
        with pytest.raises(uaerrors.BadRequestNotAllowed):
            await s.call(M.FinishRequest, app_id(gds, app), request_id)
    finally:
        await s.client.disconnect()


async def test_revocation(gds: RunningGds, apps: dict[str, AppIdentity]) -> None:
    app = apps["scada"]
    s = await session(gds, app)
    admin = await session(gds, apps["hmi"], "ca-admin")
    try:
        cert, _issuers, _key = await pull_with_csr(s, gds, app, "rsa2048", RSA_TYPE)
        der = cert.public_bytes(serialization.Encoding.DER)
        assert await s.call(M.GetCertificateStatus, app_id(gds, app), NULL, RSA_TYPE) is False
        with pytest.raises(uaerrors.BadUserAccessDenied):  # SelfAdmin may not revoke
            await s.call(M.RevokeCertificate, app_id(gds, app), der)
        with pytest.raises(uaerrors.BadInvalidArgument):  # not hmi's certificate
            await admin.call(M.RevokeCertificate, app_id(gds, apps["hmi"]), der)
        await admin.call(M.RevokeCertificate, app_id(gds, app), der)
        assert await s.call(M.GetCertificateStatus, app_id(gds, app), NULL, RSA_TYPE) is True
        status, _validity = await s.call(M.CheckRevocationStatus, der)
        assert status.value == ua.StatusCodes.BadCertificateRevoked
        # The CRL in the trust list (read through the file object) lists the serial.
        trust_list_id = await s.call(M.GetTrustList, app_id(gds, app), NULL)
        content = decode_trustlist(await s.read_trust_list(trust_list_id, TrustListMask.TRUSTED_CRLS))
        assert content.specified_lists == TrustListMask.TRUSTED_CRLS and not content.trusted_certificates
        crls = [x509.load_der_x509_crl(d) for d in content.trusted_crls]
        assert any(c.get_revoked_certificate_by_serial_number(cert.serial_number) for c in crls)
        # Revoked twice: the engine's InvalidState.
        with pytest.raises(uaerrors.BadInvalidState):
            await admin.call(M.RevokeCertificate, app_id(gds, app), der)
    finally:
        await s.client.disconnect()
        await admin.client.disconnect()


async def test_status_update_required_without_certificate_of_type(gds: RunningGds,
                                                                  apps: dict[str, AppIdentity]) -> None:
    app = apps["scada"]
    s = await session(gds, app)
    try:
        # The app holds only an RSA certificate: an EC P-256 one is missing.
        assert await s.call(M.GetCertificateStatus, app_id(gds, app), NULL, RSA_TYPE) is False
        assert await s.call(M.GetCertificateStatus, app_id(gds, app), NULL, P256_TYPE) is True
    finally:
        await s.client.disconnect()


# -- who may call -------------------------------------------------------------------------------------
async def test_role_matrix(gds: RunningGds, apps: dict[str, AppIdentity], tmp_path: Path) -> None:
    scada, hmi = apps["scada"], apps["hmi"]
    own = await session(gds, hmi)  # SelfAdmin of hmi, anonymous
    nobody = await session(gds, hmi, "no-role")
    admin = await session(gds, hmi, "ca-admin")
    sign = await session(gds, scada, "ca-admin", mode=ua.MessageSecurityMode.Sign)
    other = foreign_engine(tmp_path / "other")
    stranger_id = issue_app_identity(other, tmp_path / "other-certs", "stranger", "urn:plant:stranger")
    other.close()
    stranger = await session(gds, stranger_id, "no-role")
    try:
        csr, _ = csr_for(scada)
        for s in (own, nobody):  # hmi's channel, scada's ApplicationId
            for spec, args in ((M.StartSigningRequest, (NULL, NULL, csr)), (M.GetCertificateGroups, ()),
                               (M.GetCertificates, (NULL,)), (M.GetTrustList, (NULL,)),
                               (M.GetCertificateStatus, (NULL, NULL)),
                               (M.StartNewKeyPairRequest, (NULL, NULL, "", NO_NAMES, "PEM", "")),
                               (M.FinishRequest, (ua.NodeId(uuid.uuid4(), s.idx),))):
                with pytest.raises(uaerrors.BadUserAccessDenied):
                    await s.call(spec, app_id(gds, scada), *args)
        with pytest.raises(uaerrors.BadUserAccessDenied):  # no role, not an engine-issued certificate
            await stranger.call(M.GetCertificateGroups, app_id(gds, scada))
        with pytest.raises(uaerrors.BadUserAccessDenied):
            await own.call(M.RevokeCertificate, app_id(gds, hmi), hmi.cert_der)
        # The no-role user still has the channel's SelfAdmin privilege for hmi itself.
        assert await nobody.call(M.GetCertificateGroups, app_id(gds, hmi)) == [nobody.group()]
        # CertificateAuthorityAdmin acts for any application.
        request_id = await admin.call(M.StartSigningRequest, app_id(gds, scada), NULL, NULL, csr)
        cert_der, _pk, _issuers = await admin.call(M.FinishRequest, app_id(gds, scada), request_id)
        assert x509.load_der_x509_certificate(cert_der)
        # Sign-only channel: Start*/Finish need SignAndEncrypt even for an admin; queries work.
        for spec, args in ((M.StartSigningRequest, (NULL, NULL, csr)),
                           (M.StartNewKeyPairRequest, (NULL, NULL, "", NO_NAMES, "PEM", "")),
                           (M.FinishRequest, (request_id,))):
            with pytest.raises(uaerrors.BadSecurityModeInsufficient):
                await sign.call(spec, app_id(gds, scada), *args)
        assert await sign.call(M.GetCertificateGroups, app_id(gds, scada)) == [sign.group()]
        status, _ = await sign.call(M.CheckRevocationStatus, cert_der)
        assert status.is_good()
        status, _ = await stranger.call(M.CheckRevocationStatus, cert_der)  # any authenticated channel
        assert status.is_good()
    finally:
        for s in (own, nobody, admin, sign, stranger):
            await s.client.disconnect()


# -- bad input ----------------------------------------------------------------------------------------
async def test_bad_input(gds: RunningGds, apps: dict[str, AppIdentity]) -> None:
    scada, hmi = apps["scada"], apps["hmi"]
    admin = await session(gds, scada, "ca-admin")
    admin_other_channel = await session(gds, hmi, "ca-admin")
    try:
        # A request of hmi, started over hmi's channel, to test Finish refusals later.
        csr_hmi, _ = csr_for(hmi)
        hmi_request = await admin_other_channel.call(M.StartSigningRequest, app_id(gds, hmi), NULL, NULL, csr_hmi)
        csr, _ = csr_for(scada)
        scada_request = await admin.call(M.StartSigningRequest, app_id(gds, scada), NULL, NULL, csr)
        before = store_snapshot(gds.engine)
        count = gds.engine.inventory.count()
        sid = app_id(gds, scada)
        refusals: list[tuple[type[Exception], Any, tuple[Any, ...]]] = [
            # argument counts (OPC 10000-4 Call) and types
            (uaerrors.BadArgumentsMissing, M.StartSigningRequest, (sid, NULL, NULL)),
            (uaerrors.BadTooManyArguments, M.StartSigningRequest, (sid, NULL, NULL, csr, csr)),
            (uaerrors.BadArgumentsMissing, M.GetCertificateGroups, ()),
            (uaerrors.BadInvalidArgument, M.StartSigningRequest, (sid, NULL, NULL, "not bytes")),
            (uaerrors.BadInvalidArgument, M.GetTrustList, (sid, "DefaultApplicationGroup")),
            (uaerrors.BadInvalidArgument, M.StartNewKeyPairRequest, (sid, NULL, NULL, "", "localhost", "PEM", "")),
            # unknown application
            (uaerrors.BadNotFound, M.StartSigningRequest, (ua.NodeId(uuid.uuid4(), admin.idx), NULL, NULL, csr)),
            (uaerrors.BadNotFound, M.GetCertificateGroups, (ua.NodeId("scada-1", admin.idx),)),
            (uaerrors.BadNotFound, M.GetCertificates, (ua.NodeId(uuid.uuid4(), admin.idx), NULL)),
            # groups and types
            (uaerrors.BadInvalidArgument, M.StartSigningRequest,
             (sid, admin.group(GdsObjects.DefaultUserTokenGroup), NULL, csr)),
            (uaerrors.BadInvalidArgument, M.StartSigningRequest, (sid, ua.NodeId(9999, admin.idx), NULL, csr)),
            (uaerrors.BadInvalidArgument, M.StartSigningRequest, (sid, NULL, P256_TYPE, csr)),  # RSA key
            (uaerrors.BadInvalidArgument, M.StartSigningRequest, (sid, NULL, ua.NodeId(12345), csr)),
            (uaerrors.BadInvalidArgument, M.GetTrustList, (sid, admin.group(GdsObjects.DefaultHttpsGroup))),
            (uaerrors.BadInvalidArgument, M.GetCertificateStatus, (sid, NULL, ua.NodeId(12345))),
            # requests
            (uaerrors.BadInvalidArgument, M.StartSigningRequest, (sid, NULL, NULL, b"garbage")),
            (uaerrors.BadCertificateUriInvalid, M.StartSigningRequest,
             (sid, NULL, NULL, csr_for(scada, uri=hmi.application_uri)[0])),
            (uaerrors.BadInvalidArgument, M.FinishRequest, (sid, hmi_request)),  # another app's request
            (uaerrors.BadInvalidArgument, M.FinishRequest, (sid, ua.NodeId(uuid.uuid4(), admin.idx))),
            (uaerrors.BadInvalidArgument, M.FinishRequest, (sid, ua.NodeId(5, admin.idx))),
            (uaerrors.BadInvalidArgument, M.CheckRevocationStatus, (b"garbage",)),
            (uaerrors.BadInvalidArgument, M.RevokeCertificate, (sid, b"garbage")),
        ]
        for code, spec, args in refusals:
            with pytest.raises(code):
                await admin.call(spec, *args)
        # Finish from a different client certificate than the request's.
        with pytest.raises(uaerrors.BadUserAccessDenied):
            await admin_other_channel.call(M.FinishRequest, sid, scada_request)
        assert store_snapshot(gds.engine) == before
        assert gds.engine.inventory.count() == count
        # The GDS still answers, and the request is still there for the right channel.
        assert await admin.call(M.GetCertificateGroups, sid) == [admin.group()]
        cert_der, _pk, _issuers = await admin.call(M.FinishRequest, sid, scada_request)
        assert x509.load_der_x509_certificate(cert_der)
    finally:
        await admin.client.disconnect()
        await admin_other_channel.client.disconnect()


async def test_method_nodes_have_standard_ids_and_arguments(gds: RunningGds, apps: dict[str, AppIdentity]) -> None:
    s = await session(gds, apps["scada"])
    try:
        for spec in CertificateDirectoryMethods.all():
            node = s.client.get_node(spec.node_id(s.idx))
            assert (await node.read_browse_name()) == spec.browse_name(s.idx)
            if spec.inputs:
                args = await (await node.get_child("0:InputArguments")).read_value()
                assert [a.Name for a in args] == list(spec.input_names)
            if spec.outputs:
                args = await (await node.get_child("0:OutputArguments")).read_value()
                assert [a.Name for a in args] == list(spec.output_names)
    finally:
        await s.client.disconnect()


async def test_default_installers_serve_pull_and_trust_list(tmp_path: Path) -> None:
    """directory, pull and trustlist_file together: no NodeId collisions, all answer."""
    async for running in running_gds(tmp_path):
        app = issue_app_identity(running.engine, tmp_path / "certs", "scada-1", "urn:plant:scada-1")
        s = await session(running, app)
        try:
            assert await s.call(M.GetCertificateGroups, app_id(running, app)) == [s.group()]
            trust_list_id = await s.call(M.GetTrustList, app_id(running, app), NULL)
            content = decode_trustlist(await s.read_trust_list(trust_list_id))
            assert content == running.engine.trustlists.get("opcua-application").content
        finally:
            await s.client.disconnect()


async def test_requester_is_the_channel_certificate(gds: RunningGds, apps: dict[str, AppIdentity]) -> None:
    """The requester recorded with a request is the SHA-256 of the SecureChannel's client certificate."""
    s = await session(gds, apps["hmi"], "ca-admin")
    try:
        csr, _ = csr_for(apps["scada"])
        request_id = await s.call(M.StartSigningRequest, app_id(gds, apps["scada"]), NULL, NULL, csr)
    finally:
        await s.client.disconnect()
    req = gds.engine.requests.get(str(request_id.Identifier))
    assert req.requester_fingerprint == hashlib.sha256(apps["hmi"].cert_der).hexdigest()
    assert req.owner_id == apps["scada"].owner_id
