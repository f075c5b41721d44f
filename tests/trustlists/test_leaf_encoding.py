"""trustlists.leaf_encoding: the issuer's template writes exactly the leaf cryptography's CertificateBuilder writes.

Every combination the engine issues: each CA key type the policy allows with each hash, each leaf key type, the
extension profiles of every default group (key usage per key family, the EKUs, with and without the OCSP and CRL
locations), subjectAltNames of every shape, subjects of every string type and length form, serials and times at
the edges of their encodings. ECDSA signatures are random: there the TBSCertificate and the signature algorithm
are compared byte for byte and the signature verified; RSA PKCS#1 v1.5 and Ed25519 are deterministic, so there the
whole certificate is.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from trustlists import authority
from trustlists.certificate_builder import build_ca, builder_for, ca_name, leaf_fields
from trustlists.csr_checks import ApprovedRequest
from trustlists.der_writer import children, tlv
from trustlists.keys.algorithms import generate_private_key, key_type_of, signature_hash
from trustlists.leaf_encoding import LeafEncoder
from trustlists.models import KeyType
from trustlists.policy import GroupPolicy, load_default_config
from trustlists.serials import random_serial
from trustlists.testing import initialized_engine, make_csr

NOW = datetime(2026, 5, 4, 3, 2, 1, 987654, tzinfo=UTC)
CA_TYPES = [KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA2048, KeyType.ED25519]
LEAF_TYPES = [KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA2048, KeyType.RSA3072, KeyType.ED25519]


@functools.cache
def _key(key_type: KeyType, n: int = 0) -> CertificateIssuerPrivateKeyTypes:
    return generate_private_key(key_type)


@functools.cache
def _issuer(key_type: KeyType, lifetime_days: int = 3650) -> x509.Certificate:
    key = _key(key_type)
    return build_ca(subject=ca_name("plant", f"Issuing CA {key_type.value}"), public_key=key.public_key(),
                    issuer_cert=None, issuer_key=key, issuer_key_type=key_type, hash_name="sha256",
                    serial=random_serial(), lifetime_days=lifetime_days, path_length=0, now=NOW - timedelta(days=1))


def _request(leaf_type: KeyType, *, subject: x509.Name | None = None, san_uri: str | None = "urn:plant:scada1",
             dns: list[str] | None = None, ips: list[str] | None = None) -> ApprovedRequest:
    public_key = _key(leaf_type, 1).public_key()
    subject = subject or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scada1"),
                                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "plant")])
    return ApprovedRequest(subject=subject, public_key=public_key, key_type=key_type_of(public_key), san_uri=san_uri,
                           dns_names=dns if dns is not None else ["scada1"], ip_addresses=ips or [])


def _group(name: str, **changes: object) -> GroupPolicy:
    return load_default_config().group(name).model_copy(update=changes)


def _check_equal(ca_type: KeyType, request: ApprovedRequest, policy: GroupPolicy, *, hash_name: str = "sha256",
                 serial: int | None = None, now: datetime = NOW, issuer: x509.Certificate | None = None,
                 ocsp_url: str | None = None, crl_url: str | None = None) -> bytes:
    """Both ways to the same leaf; returns the template's DER."""
    issuer = issuer or _issuer(ca_type)
    key = _key(ca_type)
    algorithm = signature_hash(ca_type, hash_name)
    fields = leaf_fields(request=request, policy=policy, issuer_cert=issuer, serial=serial or random_serial(),
                         now=now, ocsp_url=ocsp_url, crl_url=crl_url)
    reference = builder_for(fields, request).sign(key, algorithm)
    encoder = LeafEncoder.for_issuer(fields.profile, key, algorithm)
    assert encoder is not None
    spki = request.public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    tbs = encoder.tbs(fields, subject=request.subject, spki=spki, san_uri=request.san_uri,
                      dns_names=request.dns_names, ip_addresses=request.ip_addresses)
    assert tbs == reference.tbs_certificate_bytes
    ours = encoder.sign(tbs, key)
    reference_der = reference.public_bytes(serialization.Encoding.DER)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature_algorithm = children(reference_der)[1]
        signature = x509.load_der_x509_certificate(ours).signature
        assert ours == tlv(0x30, tbs + signature_algorithm + tlv(0x03, b"\x00" + signature))
    else:
        assert ours == reference_der
    cert = x509.load_der_x509_certificate(ours)
    cert.verify_directly_issued_by(issuer)
    # What the engine records comes from the fields: they are what the certificate says.
    assert (cert.not_valid_before_utc, cert.not_valid_after_utc) == (fields.not_before, fields.not_after)
    return ours


@pytest.mark.parametrize("ca_type", CA_TYPES)
@pytest.mark.parametrize("leaf_type", LEAF_TYPES)
def test_every_ca_and_leaf_key_type(ca_type: KeyType, leaf_type: KeyType) -> None:
    _check_equal(ca_type, _request(leaf_type), _group("mqtt-device"))


@pytest.mark.parametrize("ca_type", [KeyType.EC_P256, KeyType.RSA2048])
@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
def test_every_hash(ca_type: KeyType, hash_name: str) -> None:
    _check_equal(ca_type, _request(KeyType.EC_P384), _group("opcua-application"), hash_name=hash_name)


@pytest.mark.parametrize("group", ["opcua-application", "opcua-user", "mqtt-device", "mqtt-broker", "web-server"])
@pytest.mark.parametrize("leaf_type", [KeyType.EC_P256, KeyType.RSA2048])
@pytest.mark.parametrize("urls", [(None, None), ("http://pki.plant:8080/ocsp", None),
                                  (None, "http://pki.plant/crl/ca-1.crl"),
                                  ("http://pki.plant/ocsp", "http://pki.plant/crl/ca-1.crl")])
def test_every_group_profile_with_and_without_locations(group: str, leaf_type: KeyType,
                                                        urls: tuple[str | None, str | None]) -> None:
    ocsp_url, crl_url = urls
    _check_equal(KeyType.EC_P256, _request(leaf_type), _group(group), ocsp_url=ocsp_url, crl_url=crl_url)


def test_no_extended_key_usage() -> None:
    _check_equal(KeyType.EC_P256, _request(KeyType.EC_P256), _group("mqtt-device", extended_key_usage=[]))


@pytest.mark.parametrize("san", [
    ("urn:plant:scada1", [], []),
    (None, ["scada1"], []),
    (None, [], []),  # no subjectAltName at all
    (None, [], ["10.0.0.7"]),
    ("urn:plant:x", ["a.plant.example", "b"], ["192.168.1.1", "fd00::1", "::ffff:10.1.2.3"]),
    ("urn:otpki:mqtt:default:" + "d" * 200, ["h" * 63 + ".example"] * 3, []),  # long: multi-byte lengths
])
def test_every_subject_alternative_name_shape(san: tuple[str | None, list[str], list[str]]) -> None:
    uri, dns, ips = san
    _check_equal(KeyType.RSA2048, _request(KeyType.EC_P256, san_uri=uri, dns=dns, ips=ips), _group("mqtt-broker"))


@pytest.mark.parametrize("subject", [
    x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Ünïcødé 机器 ✓")]),
    x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plc-7", _type=x509.name._ASN1Type.PrintableString),
               x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
               x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "line 4, cell \"B\" + more")]),
    x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, "multi"),
                                               x509.NameAttribute(NameOID.SERIAL_NUMBER, "42")])]),
    x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "c" * 64),
               x509.NameAttribute(NameOID.ORGANIZATION_NAME, "o" * 64),
               x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "u" * 64),
               x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "plant")]),
])
def test_every_subject_form(subject: x509.Name) -> None:
    _check_equal(KeyType.ED25519, _request(KeyType.EC_P256, subject=subject), _group("opcua-application"))


def test_a_subject_parsed_from_a_csr_keeps_its_string_types() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev1", _type=x509.name._ASN1Type.PrintableString),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "plant", _type=x509.name._ASN1Type.T61String)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    parsed = x509.load_der_x509_csr(csr.public_bytes(serialization.Encoding.DER))
    request = ApprovedRequest(subject=parsed.subject, public_key=parsed.public_key(), key_type=KeyType.EC_P256,
                              san_uri="urn:otpki:mqtt:default:dev1")
    der = _check_equal(KeyType.EC_P256, request, _group("mqtt-device"))
    assert x509.load_der_x509_certificate(der).subject.public_bytes() == name.public_bytes()


@pytest.mark.parametrize("serial", [1, 127, 128, 255, 256, 0x7FFF, 0x8000, (1 << 159) - 1, (1 << 158) | 5])
def test_serials_at_the_edges_of_their_encoding(serial: int) -> None:
    _check_equal(KeyType.EC_P256, _request(KeyType.EC_P256), _group("mqtt-device"), serial=serial)


@pytest.mark.parametrize("now", [
    datetime(2049, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # notBefore UTCTime, notAfter GeneralizedTime
    datetime(2050, 1, 1, 0, 10, 0, tzinfo=UTC),  # notBefore 2049 (backdated), notAfter 2050+
    datetime(2060, 6, 1, tzinfo=UTC),  # both GeneralizedTime
    datetime(2026, 3, 29, 3, 30, tzinfo=timezone(timedelta(hours=2))),  # another zone: stated in UTC
    datetime(2026, 3, 29, 1, 30),  # naive: UTC, as the builder takes it
])
def test_times_in_both_encodings_and_any_zone(now: datetime) -> None:
    issuer = _issuer(KeyType.EC_P256, lifetime_days=36500)
    _check_equal(KeyType.EC_P256, _request(KeyType.EC_P256), _group("mqtt-device", leaf_lifetime_days=400),
                 now=now, issuer=issuer)


def test_a_leaf_does_not_outlive_its_issuer() -> None:
    issuer = _issuer(KeyType.EC_P256, lifetime_days=30)
    der = _check_equal(KeyType.EC_P256, _request(KeyType.EC_P256), _group("mqtt-device"), issuer=issuer)
    assert x509.load_der_x509_certificate(der).not_valid_after_utc == issuer.not_valid_after_utc


def test_names_the_template_does_not_encode_are_left_to_the_builder() -> None:
    """Not ASCII in an IA5String: None, and the builder (which the caller then uses) refuses it as before."""
    policy = _group("mqtt-broker")
    key = _key(KeyType.EC_P256)
    for request in (_request(KeyType.EC_P256, san_uri="urn:plant:ü"), _request(KeyType.EC_P256, dns=["bücher.de"])):
        fields = leaf_fields(request=request, policy=policy, issuer_cert=_issuer(KeyType.EC_P256),
                             serial=random_serial(), now=NOW)
        encoder = LeafEncoder.for_issuer(fields.profile, key, hashes.SHA256())
        assert encoder is not None
        spki = request.public_key.public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        assert encoder.tbs(fields, subject=request.subject, spki=spki, san_uri=request.san_uri,
                           dns_names=request.dns_names, ip_addresses=request.ip_addresses) is None
        with pytest.raises(ValueError):
            builder_for(fields, request)


def test_key_kinds_without_a_template_get_none() -> None:
    fields = leaf_fields(request=_request(KeyType.EC_P256), policy=_group("mqtt-device"),
                         issuer_cert=_issuer(KeyType.EC_P256), serial=random_serial(), now=NOW)
    assert LeafEncoder.for_issuer(fields.profile, _key(KeyType.EC_P256), None) is None  # ECDSA needs a hash
    assert LeafEncoder.for_issuer(fields.profile, _key(KeyType.ED25519), hashes.SHA256()) is None


def test_the_engine_issues_from_the_template_and_its_leaves_pass_openssl_and_pkilint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every default group's profile (with the OCSP and CRL locations), a CSR of each key family and a key the
    server makes, through `Engine.authority`: no certificate comes from the builder, and each one verifies with
    `openssl verify` up to the root and draws nothing at or above NOTICE from pkilint's RFC 5280 linter (its URN
    finding aside, below)."""
    def no_builder(*_args: object, **_kwargs: object) -> x509.CertificateBuilder:
        raise AssertionError("the builder signed a certificate the template covers")

    monkeypatch.setattr(authority, "builder_for", no_builder)
    config = load_default_config()
    config = config.model_copy(update={
        "root": config.root.model_copy(update={"key_type": KeyType.RSA2048}),
        "publication": config.publication.model_copy(update={"base_url": "http://pki.plant:8080"}),
        "groups": {name: policy.model_copy(update={"ocsp_url_in_certificates": True,
                                                   "crl_url_in_certificates": True})
                   for name, policy in config.groups.items()}})
    engine = initialized_engine(tmp_path / "engine", config=config, actor="tester")
    try:
        scada = engine.registry.register(group="opcua-application", name="scada-1",
                                         application_uri="urn:plant:scada-1", dns_names=["scada-1.plant"],
                                         ip_addresses=["10.0.0.5", "fd00::5"], actor="tester")
        pump = engine.registry.register(group="mqtt-device", name="pump-7", actor="tester")
        broker = engine.registry.register(group="mqtt-broker", name="broker-1", dns_names=["broker.plant"],
                                          actor="tester")
        user = engine.registry.register(group="opcua-user", name="operator-1", actor="tester")
        issued = [
            engine.authority.issue_from_csr(make_csr("scada-1", uris=["urn:plant:scada-1"], dns=["scada-1.plant"]),
                                            owner_id=scada.id, actor="tester"),
            engine.authority.issue_from_csr(make_csr("pump-7", key=ed25519.Ed25519PrivateKey.generate()),
                                            owner_id=pump.id, actor="tester"),
            engine.authority.issue_from_csr(make_csr("pump-7", key=_key(KeyType.EC_P384, 2)), owner_id=pump.id,
                                            actor="tester"),
            engine.authority.issue_with_new_key(owner_id=broker.id, actor="tester", key_type=KeyType.RSA2048),
            engine.authority.issue_with_new_key(owner_id=user.id, actor="tester", key_type=KeyType.EC_P256),
        ]
    finally:
        engine.close()
    linter = str(Path(sys.executable).parent / "lint_pkix_cert")
    for n, certificate in enumerate(issued):
        leaf = tmp_path / f"leaf-{n}.pem"
        leaf.write_bytes(x509.load_der_x509_certificate(certificate.certificate_der).public_bytes(
            serialization.Encoding.PEM))
        issuing, root = (x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM)
                         for d in certificate.chain_der)
        (tmp_path / "root.pem").write_bytes(root)
        (tmp_path / "issuing.pem").write_bytes(issuing)
        result = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted",
                                 str(tmp_path / "issuing.pem"), str(leaf)], capture_output=True, text=True,
                                check=False)
        assert result.returncode == 0, (n, result.stdout, result.stderr)
        result = subprocess.run([linter, "lint", "-s", "NOTICE", str(leaf)], capture_output=True, text=True,
                                check=False)
        # pkilint's URI check wants an authority (scheme://host): it calls every URN invalid, and OPC UA
        # ApplicationUris and the engine's identities are URNs (RFC 8141, valid RFC 3986 URIs). Nothing else passes.
        findings = [line.strip() for line in result.stdout.splitlines() if line.startswith("    ")]
        urn_finding = 'pkix.invalid_uri_syntax (ERROR): Invalid URI syntax: "urn:'
        assert not [f for f in findings if not f.startswith(urn_finding)], (n, result.stdout, result.stderr)
        assert findings or result.returncode == 0, (n, result.stdout, result.stderr)
