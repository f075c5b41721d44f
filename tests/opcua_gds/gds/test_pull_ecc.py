"""ECC application certificates from the GDS (issue 12 §5): CertificateTypes, CSRs and new key pairs by type.

OPC 10000-12 7.8.4.11-12 (EccNistP256/EccNistP384ApplicationCertificateType), 7.9.3-5 (StartSigningRequest,
StartNewKeyPairRequest with a CertificateTypeId) and the Part 6 ECC certificate profile: ECC keys on the named
curve, keyUsage digitalSignature + nonRepudiation + keyAgreement (never key or data encipherment), both
extended key usages, the SAN URI. Over real asyncua SignAndEncrypt sessions against a running GDS.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.ua import uaerrors
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from opcua_gds.gds.server import default_installers
from opcua_gds.nodeids import CertificateDirectoryMethods, CertificateGroups, CertificateTypes, GdsObjects
from opcua_gds.testing import AppIdentity, issue_app_identity
from tests.opcua_gds.gds.gds_fixture import RunningGds, running_gds
from tests.opcua_gds.gds.test_pull import Gds, app_id, csr_for, public_der, session
from trustlists.models import KeyType
from trustlists.policy import load_default_config

M = CertificateDirectoryMethods
T = CertificateTypes
RSA_TYPE = ua.NodeId(T.RsaSha256ApplicationCertificateType)
P256_TYPE = ua.NodeId(T.EccNistP256ApplicationCertificateType)
P384_TYPE = ua.NodeId(T.EccNistP384ApplicationCertificateType)
NULL = ua.NodeId()
CURVES = {P256_TYPE: ec.SECP256R1, P384_TYPE: ec.SECP384R1}
DOMAINS = ua.Variant(["localhost", "127.0.0.1"], ua.VariantType.String, is_array=True)


# One GDS for the module (starting one is most of a test's time; as test_pull.py): its tests run on the module's
# event loop, each with an application of its own.
pytestmark = pytest.mark.asyncio(loop_scope="module")
_app_numbers = itertools.count(1)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gds(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningGds]:
    async for running in running_gds(tmp_path_factory.mktemp("gds"), installers=default_installers()):
        yield running


@pytest.fixture
def app(gds: RunningGds) -> AppIdentity:
    """An application of this test's own: the certificates it asks for meet no other test's."""
    n = next(_app_numbers)
    return issue_app_identity(gds.engine, gds.tmp / "certs" / str(n), f"scada-ecc-{n}", f"urn:plant:scada-ecc-{n}")


def assert_ecc_application_profile(cert: x509.Certificate, curve: type[ec.EllipticCurve], app: AppIdentity) -> None:
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, curve)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature and usage.value.content_commitment and usage.value.key_agreement
    assert not usage.value.key_encipherment and not usage.value.data_encipherment  # RSA-only usages
    assert not usage.value.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [app.application_uri]
    # Signed with a hash as strong as the key: SHA-384 for P-384 (OPC 10000-7 ECC_nistP384), SHA-256 for P-256.
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == ("sha384" if curve is ec.SECP384R1 else "sha256")


async def read_certificate_types(s: Gds, group: GdsObjects = GdsObjects.DefaultApplicationGroup) -> list[Any]:
    ids = {GdsObjects.DefaultApplicationGroup: CertificateGroups.GdsDefaultApplicationGroup,
           GdsObjects.DefaultUserTokenGroup: CertificateGroups.GdsDefaultUserTokenGroup,
           GdsObjects.DefaultHttpsGroup: CertificateGroups.GdsDefaultHttpsGroup}[group]
    node = s.client.get_node(ids.property_node_id("CertificateTypes", s.idx))
    assert (await node.get_parent()).nodeid == ua.NodeId(int(group), s.idx)
    return list(await node.read_value() or [])


async def test_the_application_group_lists_the_types_its_policy_issues(gds: RunningGds, app: AppIdentity) -> None:
    s = await session(gds, app)
    try:
        # default.toml: RSA 2048-4096 (one type, RsaSha256) and the two NIST curves; RSA first, the default.
        assert await read_certificate_types(s) == [RSA_TYPE, P256_TYPE, P384_TYPE]
        assert await read_certificate_types(s, GdsObjects.DefaultUserTokenGroup) == [
            ua.NodeId(T.UserCredentialCertificateType)]
        assert await read_certificate_types(s, GdsObjects.DefaultHttpsGroup) == []  # no engine group issues it
    finally:
        await s.client.disconnect()


@pytest.mark.parametrize("type_id", [P256_TYPE, P384_TYPE], ids=["p256", "p384"])
@pytest.mark.parametrize("fmt", ["PEM", "PFX"])
async def test_a_new_key_pair_of_an_ecc_type(gds: RunningGds, app: AppIdentity, type_id: ua.NodeId,
                                             fmt: str) -> None:
    s = await session(gds, app)
    try:
        password = "pfx-secret" if fmt == "PFX" else ""
        request_id = await s.call(M.StartNewKeyPairRequest, app_id(gds, app), s.group(), type_id,
                                  "CN=scada-ecc/O=plant", DOMAINS, fmt, password)
        cert_der, key_data, issuers = await s.call(M.FinishRequest, app_id(gds, app), request_id)
        cert = x509.load_der_x509_certificate(cert_der)
        assert_ecc_application_profile(cert, CURVES[type_id], app)
        if fmt == "PEM":
            key = serialization.load_pem_private_key(key_data, None)
        else:
            key, _cert, _extra = pkcs12.load_key_and_certificates(key_data, password.encode())
        assert isinstance(key, ec.EllipticCurvePrivateKey) and public_der(key) == public_der(cert)
        assert x509.load_der_x509_certificate(issuers[0]).subject == cert.issuer

        types, certs = await s.call(M.GetCertificates, app_id(gds, app), NULL)
        assert dict(zip(certs, types, strict=True))[cert_der] == type_id
        # The application has a current certificate of that type now; of the other curve it has none.
        other = P384_TYPE if type_id == P256_TYPE else P256_TYPE
        assert await s.call(M.GetCertificateStatus, app_id(gds, app), NULL, type_id) is False
        assert await s.call(M.GetCertificateStatus, app_id(gds, app), NULL, other) is True
    finally:
        await s.client.disconnect()


async def test_without_a_type_a_new_key_pair_is_rsa(gds: RunningGds, app: AppIdentity) -> None:
    s = await session(gds, app)
    try:
        request_id = await s.call(M.StartNewKeyPairRequest, app_id(gds, app), NULL, NULL, "", DOMAINS, "PEM", "")
        cert_der, _key, _issuers = await s.call(M.FinishRequest, app_id(gds, app), request_id)
        key = x509.load_der_x509_certificate(cert_der).public_key()
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    finally:
        await s.client.disconnect()


async def test_a_signing_request_must_fit_the_type_it_names(gds: RunningGds, app: AppIdentity) -> None:
    s = await session(gds, app)
    try:
        csr, key = csr_for(app, "ec-p384")
        request_id = await s.call(M.StartSigningRequest, app_id(gds, app), NULL, P384_TYPE, csr)
        cert_der, _none, _issuers = await s.call(M.FinishRequest, app_id(gds, app), request_id)
        cert = x509.load_der_x509_certificate(cert_der)
        assert public_der(cert) == public_der(key)
        assert_ecc_application_profile(cert, ec.SECP384R1, app)
        for key_kind, type_id in (("ec-p256", P384_TYPE), ("ec-p384", P256_TYPE), ("ec-p256", RSA_TYPE),
                                  ("rsa2048", P256_TYPE)):
            csr, _key = csr_for(app, key_kind)
            with pytest.raises(uaerrors.BadInvalidArgument):
                await s.call(M.StartSigningRequest, app_id(gds, app), NULL, type_id, csr)
    finally:
        await s.client.disconnect()


async def test_a_group_whose_policy_issues_rsa_only_lists_and_issues_rsa_only(tmp_path: Path) -> None:
    config = load_default_config()
    group = config.group("opcua-application")
    config.groups["opcua-application"] = group.model_copy(
        update={"allowed_key_types": [KeyType.RSA2048, KeyType.RSA3072]})
    async for env in running_gds(tmp_path, installers=[*default_installers()], config=config):
        app = issue_app_identity(env.engine, tmp_path / "certs", "rsa-only", "urn:plant:rsa-only")
        s = await session(env, app)
        try:
            assert await read_certificate_types(s) == [RSA_TYPE]
            with pytest.raises(uaerrors.BadInvalidArgument):
                await s.call(M.StartNewKeyPairRequest, app_id(env, app), NULL, P256_TYPE, "", DOMAINS, "PEM", "")
            csr, _key = csr_for(app, "ec-p256")
            with pytest.raises(uaerrors.BadInvalidArgument):  # null type: the policy still decides
                await s.call(M.StartSigningRequest, app_id(env, app), NULL, NULL, csr)
        finally:
            await s.client.disconnect()

