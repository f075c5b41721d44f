"""OPC UA-specific rules of trustlists.validation on small hierarchies built here (root -> issuing CA -> leaf).

Every test builds its certificates and CRLs with cryptography, so each rule is checked in isolation:
the same hierarchy validates (GOOD) and one deliberate change makes it fail with one Part 4 code.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from opcua_gds.validation_status import status_code, status_name
from trustlists.models import TrustListContent
from trustlists.validation import (
    CertificateValidator,
    RevocationStatus,
    ValidationCode,
    ValidationOptions,
    ValidationResult,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
APP_URI = "urn:plant1:line3:press-controller"
HOST = "press-ctl.plant1.example"
C = ValidationCode

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _der(cert: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    return cert.public_bytes(Encoding.DER)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "otpki tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


_KEY_CACHE: dict[tuple[str, str], PrivateKey] = {}


def _key(kind: str, label: str = "") -> PrivateKey:
    """Keys are cached per (kind, label): RSA keygen is slow and tests only need distinct keys per role."""
    cache_key = (kind, label)
    if cache_key not in _KEY_CACHE:
        if kind == "p256":
            _KEY_CACHE[cache_key] = ec.generate_private_key(ec.SECP256R1())
        else:
            _KEY_CACHE[cache_key] = rsa.generate_private_key(65537, int(kind.removeprefix("rsa")))
    return _KEY_CACHE[cache_key]


_KU_NAMES = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")


def _key_usage(*names: str) -> x509.KeyUsage:
    return x509.KeyUsage(**{n: n in names for n in _KU_NAMES})


@dataclass
class Issued:
    cert: x509.Certificate
    key: PrivateKey

    @property
    def der(self) -> bytes:
        return _der(self.cert)


def make_cert(subject: str, key: PrivateKey, issuer: Issued | None, *, ca: bool, path_length: int | None = None,
              not_before: datetime = NOW - timedelta(days=30), not_after: datetime = NOW + timedelta(days=365),
              key_usage: x509.KeyUsage | None = None, eku: list[x509.ObjectIdentifier] | None = None,
              san: list[x509.GeneralName] | None = None, serial: int | None = None,
              hash_alg: hashes.HashAlgorithm | None = None, basic_constraints: bool = True,
              issuer_name: x509.Name | None = None) -> Issued:
    signer_key = issuer.key if issuer else key
    builder = (x509.CertificateBuilder()
               .subject_name(_name(subject))
               .issuer_name(issuer_name or (issuer.cert.subject if issuer else _name(subject)))
               .public_key(key.public_key())
               .serial_number(serial or x509.random_serial_number())
               .not_valid_before(not_before)
               .not_valid_after(not_after)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
    if basic_constraints:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
    if key_usage is None:
        key_usage = _key_usage("digital_signature", "key_cert_sign", "crl_sign") if ca else \
            _key_usage("digital_signature", "content_commitment", "key_encipherment", "data_encipherment")
    builder = builder.add_extension(key_usage, critical=True)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return Issued(builder.sign(signer_key, hash_alg or hashes.SHA256()), key)


def make_crl(issuer: Issued, revoked: Sequence[int] = (), *, signer_key: PrivateKey | None = None,
             this_update: datetime = NOW - timedelta(days=1),
             next_update: datetime = NOW + timedelta(days=7)) -> bytes:
    entries = [x509.RevokedCertificateBuilder().serial_number(s).revocation_date(this_update).build()
               for s in revoked]
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(issuer.cert.subject)
               .last_update(this_update)
               .next_update(next_update)
               .add_extension(x509.CRLNumber(1), critical=False))
    for entry in entries:
        builder = builder.add_revoked_certificate(entry)
    return _der(builder.sign(signer_key or issuer.key, hashes.SHA256()))


def leaf_san(uri: str = APP_URI, host: str = HOST) -> list[x509.GeneralName]:
    return [x509.UniformResourceIdentifier(uri), x509.DNSName(host),
            x509.IPAddress(ipaddress.ip_address("10.1.2.3"))]


@dataclass
class Pki:
    """root -> issuing CA -> leaf, with a CRL for each CA; fields can be replaced before `validator()`."""

    kind: str
    root: Issued
    ica: Issued
    leaf: Issued
    root_crl: bytes | None
    ica_crl: bytes | None
    trusted: list[bytes] = field(default_factory=list)
    issuers: list[bytes] = field(default_factory=list)

    def validator(self, revocation: object | None = None) -> CertificateValidator:
        crls = [c for c in (self.root_crl, self.ica_crl) if c is not None]
        trust = TrustListContent(trusted_certificates=self.trusted or [self.root.der],
                                 trusted_crls=crls[:1] if self.root_crl else [],
                                 issuer_certificates=self.issuers or [self.ica.der],
                                 issuer_crls=[self.ica_crl] if self.ica_crl else [])
        return CertificateValidator(trust, revocation)  # type: ignore[arg-type]

    def validate(self, chain: list[bytes] | None = None, **options: object) -> ValidationResult:
        opts = ValidationOptions(at=NOW, **options)  # type: ignore[arg-type]
        return self.validator().validate(chain or [self.leaf.der], opts)


def build_pki(kind: str = "p256", *, leaf_kind: str | None = None, **leaf_args: object) -> Pki:
    root = make_cert("Root CA", _key(kind, "root"), None, ca=True)
    ica = make_cert("Issuing CA", _key(kind, "ica"), root, ca=True, path_length=0)
    args: dict[str, object] = {"san": leaf_san(),
                               "eku": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]}
    args.update(leaf_args)
    leaf = make_cert("press-controller", _key(leaf_kind or kind, "leaf"), ica, ca=False, **args)  # type: ignore[arg-type]
    return Pki(kind=kind, root=root, ica=ica, leaf=leaf, root_crl=make_crl(root), ica_crl=make_crl(ica))


@pytest.fixture(params=["p256", "rsa2048"])
def pki(request: pytest.FixtureRequest) -> Pki:
    return build_pki(request.param)


ALL_SUPPRESSED = {"suppress_certificate_expired": True, "suppress_host_name_invalid": True,
                  "suppress_revocation_status_unknown": True, "suppress_issuer_certificate_expired": True,
                  "suppress_issuer_revocation_status_unknown": True}


# --- the happy path and the result model -------------------------------------------------------------------


def test_valid_chain_with_every_opcua_check(pki: Pki) -> None:
    result = pki.validate(application_uri=APP_URI, hostname=HOST, required_eku="serverAuth",
                          opcua_application=True, min_rsa_bits=2048, max_rsa_bits=4096, reject_weak_hashes=True)
    assert result.ok, result.reason
    assert (result.code, status_code(result), status_name(result)) == (C.GOOD, 0, "Good")
    assert result.failed_index is None
    assert result.chain == [pki.leaf.der, pki.ica.der, pki.root.der]
    assert result.suppressed == []


def test_certificate_objects_are_accepted(pki: Pki) -> None:
    result = pki.validator().validate([pki.leaf.cert, pki.ica.cert], ValidationOptions(at=NOW))
    assert result.ok, result.reason


def test_status_codes_match_the_opc_ua_nodeset() -> None:
    """What the OPC UA front answers for each engine outcome (opcua_gds.validation_status), by StatusCode.csv."""
    expected = {
        C.GOOD: (0x00000000, "Good"),
        C.CERTIFICATE_INVALID: (0x80120000, "BadCertificateInvalid"),
        C.CHAIN_INCOMPLETE: (0x810D0000, "BadCertificateChainIncomplete"),
        C.POLICY_CHECK_FAILED: (0x81140000, "BadCertificatePolicyCheckFailed"),
        C.UNTRUSTED: (0x801A0000, "BadCertificateUntrusted"),
        C.TIME_INVALID: (0x80140000, "BadCertificateTimeInvalid"),
        C.ISSUER_TIME_INVALID: (0x80150000, "BadCertificateIssuerTimeInvalid"),
        C.HOST_NAME_INVALID: (0x80160000, "BadCertificateHostNameInvalid"),
        C.URI_INVALID: (0x80170000, "BadCertificateUriInvalid"),
        C.USE_NOT_ALLOWED: (0x80180000, "BadCertificateUseNotAllowed"),
        C.ISSUER_USE_NOT_ALLOWED: (0x80190000, "BadCertificateIssuerUseNotAllowed"),
        C.REVOCATION_UNKNOWN: (0x801B0000, "BadCertificateRevocationUnknown"),
        C.ISSUER_REVOCATION_UNKNOWN: (0x801C0000, "BadCertificateIssuerRevocationUnknown"),
        C.REVOKED: (0x801D0000, "BadCertificateRevoked"),
        C.ISSUER_REVOKED: (0x801E0000, "BadCertificateIssuerRevoked"),
    }
    assert set(expected) == set(ValidationCode)
    for code, (value, name) in expected.items():
        assert (status_code(code), status_name(code)) == (value, name)


def test_result_carries_the_status_code_of_its_code(pki: Pki) -> None:
    pki.ica_crl = make_crl(pki.ica, [pki.leaf.cert.serial_number])
    result = pki.validate()
    assert (result.code, status_code(result), status_name(result)) == (C.REVOKED, 0x801D0000,
                                                                      "BadCertificateRevoked")
    assert not result.ok
    assert "press-controller" in result.reason


# --- OPC UA application checks -----------------------------------------------------------------------------


def test_uri_mismatch(pki: Pki) -> None:
    result = pki.validate(application_uri="urn:plant1:line3:other", **ALL_SUPPRESSED)
    assert result.code is C.URI_INVALID  # not suppressible
    assert status_code(result) == 0x80170000
    assert result.failed_index == 0
    assert APP_URI in result.reason


def test_uri_missing_from_san() -> None:
    pki = build_pki(san=[x509.DNSName(HOST)])
    assert pki.validate(application_uri=APP_URI).code is C.URI_INVALID


def test_hostname(pki: Pki) -> None:
    assert pki.validate(hostname=HOST.upper()).ok
    assert pki.validate(hostname="10.1.2.3").ok
    result = pki.validate(hostname="other.plant1.example")
    assert result.code is C.HOST_NAME_INVALID
    assert pki.validate(hostname="10.1.2.4").code is C.HOST_NAME_INVALID
    suppressed = pki.validate(hostname="other.plant1.example", suppress_host_name_invalid=True)
    assert suppressed.ok and suppressed.suppressed == [C.HOST_NAME_INVALID]


def test_client_auth_eku_missing() -> None:
    pki = build_pki(eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    assert pki.validate(required_eku="serverAuth").ok
    result = pki.validate(required_eku="clientAuth")
    assert result.code is C.USE_NOT_ALLOWED
    assert result.failed_index == 0
    assert "clientAuth" in result.reason
    assert build_pki(eku=None).validate(required_eku="clientAuth").code is C.USE_NOT_ALLOWED


def test_rsa_1024_leaf_fails_the_security_policy() -> None:
    pki = build_pki("rsa2048", leaf_kind="rsa1024")
    assert pki.validate().ok  # no policy asked for
    result = pki.validate(min_rsa_bits=2048)
    assert result.code is C.POLICY_CHECK_FAILED
    assert status_code(result) == 0x81140000
    assert "1024" in result.reason
    assert pki.validate(min_rsa_bits=1024, max_rsa_bits=2048).ok
    assert build_pki("rsa2048").validate(max_rsa_bits=1024).code is C.POLICY_CHECK_FAILED


_SHA256_RSA_OID = bytes.fromhex("2a864886f70d01010b")  # sha256WithRSAEncryption, DER body
_SHA1_RSA_OID = bytes.fromhex("2a864886f70d010105")  # sha1WithRSAEncryption: same length


def _resign_with_sha1(cert: x509.Certificate, issuer_key: rsa.RSAPrivateKey) -> bytes:
    """cryptography's builder refuses SHA-1, so swap the algorithm OID and re-sign the TBS by hand."""
    der, tbs = _der(cert), cert.tbs_certificate_bytes
    new_tbs = tbs.replace(_SHA256_RSA_OID, _SHA1_RSA_OID)
    new_signature = issuer_key.sign(new_tbs, padding.PKCS1v15(), hashes.SHA1())
    assert len(new_tbs) == len(tbs) and len(new_signature) == len(cert.signature)
    return der.replace(tbs, new_tbs).replace(cert.signature, new_signature).replace(_SHA256_RSA_OID,
                                                                                     _SHA1_RSA_OID)


def test_sha1_signature_fails_the_policy_only_when_asked() -> None:
    pki = build_pki("rsa2048")
    sha1_leaf = _resign_with_sha1(pki.leaf.cert, pki.ica.key)  # type: ignore[arg-type]
    assert x509.load_der_x509_certificate(sha1_leaf).signature_hash_algorithm.name == "sha1"
    assert pki.validate([sha1_leaf]).ok
    result = pki.validate([sha1_leaf], reject_weak_hashes=True)
    assert (result.code, result.failed_index) == (C.POLICY_CHECK_FAILED, 0)
    assert "SHA1" in result.reason


def test_policy_comes_before_trust() -> None:
    pki = build_pki("rsa2048", leaf_kind="rsa1024")
    pki.trusted = [make_cert("Other Root", _key("p256", "other"), None, ca=True).der]
    pki.issuers = [pki.ica.der, pki.root.der]
    assert pki.validate(min_rsa_bits=2048).code is C.POLICY_CHECK_FAILED
    assert pki.validate().code is C.UNTRUSTED


@pytest.mark.parametrize(("kind", "usage", "ok"), [
    ("rsa2048", ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment"), True),
    ("rsa2048", ("digital_signature", "key_encipherment", "data_encipherment"), True),
    ("rsa2048", ("digital_signature", "key_encipherment"), False),
    ("rsa2048", ("key_encipherment", "data_encipherment"), False),
    ("p256", ("digital_signature",), True),
    ("p256", ("key_agreement",), False),
])
def test_opcua_leaf_key_usage(kind: str, usage: tuple[str, ...], ok: bool) -> None:
    pki = build_pki(kind, key_usage=_key_usage(*usage))
    assert pki.validate().ok  # only checked for OPC UA application certificates
    result = pki.validate(opcua_application=True)
    assert result.ok is ok, result.reason
    if not ok:
        assert result.code is C.USE_NOT_ALLOWED


def test_ca_without_key_cert_sign_or_ca_flag(pki: Pki) -> None:
    ica = make_cert("Issuing CA", pki.ica.key, pki.root, ca=True, key_usage=_key_usage("digital_signature",
                                                                                       "crl_sign"))
    pki.issuers = [ica.der]
    result = pki.validate()
    assert (result.code, result.failed_index) == (C.ISSUER_USE_NOT_ALLOWED, 1)
    ica = make_cert("Issuing CA", pki.ica.key, pki.root, ca=False,
                    key_usage=_key_usage("key_cert_sign", "crl_sign"))
    pki.issuers = [ica.der]
    assert pki.validate().code is C.ISSUER_USE_NOT_ALLOWED


def test_path_length_constraint(pki: Pki) -> None:
    # The issuing CA has pathLen 0, so a sub-CA under it may not issue the leaf.
    sub = make_cert("Sub CA", _key(pki.kind, "sub"), pki.ica, ca=True)
    leaf = make_cert("deep-leaf", _key(pki.kind, "leaf"), sub, ca=False, san=leaf_san())
    pki.issuers = [pki.ica.der, sub.der]
    pki.ica_crl = make_crl(pki.ica)
    result = pki.validate([leaf.der])
    assert (result.code, result.failed_index) == (C.ISSUER_USE_NOT_ALLOWED, 1)
    assert "pathLenConstraint" in result.reason


# --- trust and chain building ------------------------------------------------------------------------------


def test_untrusted_when_the_ca_is_only_in_the_issuer_list(pki: Pki) -> None:
    pki.trusted = [make_cert("Unrelated Root", _key("p256", "unrelated"), None, ca=True).der]
    pki.issuers = [pki.ica.der, pki.root.der]
    result = pki.validate(**ALL_SUPPRESSED)
    assert result.code is C.UNTRUSTED
    assert status_code(result) == 0x801A0000


def test_trusting_the_issuing_ca_is_enough(pki: Pki) -> None:
    pki.trusted = [pki.ica.der]
    pki.issuers = [pki.root.der]
    assert pki.validate().ok


def test_self_signed_vendor_certificate_trusted_directly() -> None:
    key = _key("rsa2048", "vendor")
    vendor = make_cert("vendor-device", key, None, ca=False, san=leaf_san(),
                       key_usage=_key_usage("digital_signature", "content_commitment", "key_encipherment",
                                            "data_encipherment", "key_cert_sign"))
    validator = CertificateValidator(TrustListContent(trusted_certificates=[vendor.der]))
    result = validator.validate([vendor.der], ValidationOptions(at=NOW, application_uri=APP_URI,
                                                                opcua_application=True))
    assert result.ok, result.reason
    assert result.chain == [vendor.der]
    # The same certificate, not in the trust list: untrusted (not "chain incomplete": it is its own root).
    assert CertificateValidator(TrustListContent()).validate([vendor.der]).code is C.UNTRUSTED


def test_trusted_leaf_still_needs_its_chain(pki: Pki) -> None:
    pki.trusted = [pki.leaf.der]
    pki.issuers = [make_cert("Unrelated CA", _key("p256", "unrelated"), None, ca=True).der]
    result = pki.validate()
    assert (result.code, result.failed_index) == (C.CHAIN_INCOMPLETE, 0)


def test_chain_incomplete(pki: Pki) -> None:
    pki.issuers = [make_cert("Unrelated CA", _key("p256", "unrelated"), None, ca=True).der]
    result = pki.validate(**ALL_SUPPRESSED)
    assert (result.code, result.failed_index) == (C.CHAIN_INCOMPLETE, 0)
    assert status_code(result) == 0x810D0000
    assert result.chain == [pki.leaf.der]
    # The peer may send the missing intermediate itself.
    assert pki.validate([pki.leaf.der, pki.ica.der]).ok


def test_same_name_ca_with_another_key_is_passed_over(pki: Pki) -> None:
    """Key rollover: two issuing CAs share a name; the path through the right key must be found."""
    old_ica = make_cert("Issuing CA", _key(pki.kind, "old-ica"), pki.root, ca=True)
    pki.issuers = [old_ica.der, pki.ica.der]
    assert pki.validate().ok
    pki.issuers = [pki.ica.der, old_ica.der]
    assert pki.validate().ok
    pki.issuers = [old_ica.der]
    result = pki.validate()
    assert (result.code, result.failed_index) == (C.CERTIFICATE_INVALID, 0)  # signature fails


def test_forged_leaf_signature(pki: Pki) -> None:
    forger = make_cert("Issuing CA", _key(pki.kind, "forger"), None, ca=True, issuer_name=pki.root.cert.subject)
    forged = make_cert("press-controller", pki.leaf.key, forger, ca=False, san=leaf_san())
    result = pki.validate([forged.der], **ALL_SUPPRESSED)
    assert (result.code, result.failed_index) == (C.CERTIFICATE_INVALID, 0)
    assert status_code(result) == 0x80120000


@pytest.mark.parametrize("mangle", [
    lambda der: b"",
    lambda der: b"\x00garbage\xff" * 10,
    lambda der: der[: len(der) // 2],
    lambda der: der[:-1],
    lambda der: der + b"\x00",
    lambda der: b"\x30\x82\xff\xff" + der[4:],
], ids=["empty", "garbage", "half", "minus-one-byte", "trailing-byte", "bad-length"])
def test_garbage_and_truncated_der(pki: Pki, mangle: Callable[[bytes], bytes]) -> None:
    validator = pki.validator()
    result = validator.validate([mangle(pki.leaf.der)], ValidationOptions(at=NOW))
    assert result.code is C.CERTIFICATE_INVALID
    assert result.failed_index == 0
    result = validator.validate([pki.leaf.der, mangle(pki.ica.der)], ValidationOptions(at=NOW))
    assert (result.code, result.failed_index) == (C.CERTIFICATE_INVALID, 1)


def test_odd_inputs_do_not_raise(pki: Pki) -> None:
    validator = pki.validator()
    assert validator.validate([]).code is C.CERTIFICATE_INVALID
    assert validator.validate([object()]).code is C.CERTIFICATE_INVALID  # type: ignore[list-item]


def test_overlong_chain_is_refused(pki: Pki) -> None:
    result = pki.validator().validate([pki.leaf.der] + [pki.ica.der] * 40, ValidationOptions(at=NOW))
    assert result.code is C.CERTIFICATE_INVALID
    assert "at most" in result.reason
    assert pki.validate([pki.leaf.der] + [pki.ica.der] * 5).ok  # duplicates within the limit are harmless


def test_bad_trust_list_entries_are_skipped(pki: Pki) -> None:
    trust = TrustListContent(trusted_certificates=[b"junk", pki.root.der],
                             trusted_crls=[b"\x30\x03junk", pki.root_crl or b""],
                             issuer_certificates=[pki.ica.der[:100], pki.ica.der],
                             issuer_crls=[b"", pki.ica_crl or b""])
    validator = CertificateValidator(trust)
    assert len(validator.skipped) == 4
    assert validator.validate([pki.leaf.der], ValidationOptions(at=NOW)).ok


# --- validity ----------------------------------------------------------------------------------------------


def test_expired_leaf_and_its_suppression(pki: Pki) -> None:
    leaf = make_cert("press-controller", pki.leaf.key, pki.ica, ca=False, san=leaf_san(),
                     not_after=NOW - timedelta(days=1))
    result = pki.validate([leaf.der])
    assert (result.code, result.failed_index) == (C.TIME_INVALID, 0)
    assert status_code(result) == 0x80140000
    ok = pki.validate([leaf.der], suppress_certificate_expired=True)
    assert ok.ok and ok.suppressed == [C.TIME_INVALID]


def test_not_yet_valid_issuer(pki: Pki) -> None:
    ica = make_cert("Issuing CA", pki.ica.key, pki.root, ca=True, not_before=NOW + timedelta(days=1))
    pki.issuers = [ica.der]
    result = pki.validate()
    assert (result.code, result.failed_index) == (C.ISSUER_TIME_INVALID, 1)
    assert pki.validate(suppress_issuer_certificate_expired=True).ok


def test_order_time_before_revocation(pki: Pki) -> None:
    leaf = make_cert("press-controller", pki.leaf.key, pki.ica, ca=False, san=leaf_san(),
                     not_after=NOW - timedelta(days=1))
    pki.ica_crl = make_crl(pki.ica, [leaf.cert.serial_number])
    assert pki.validate([leaf.der]).code is C.TIME_INVALID
    result = pki.validate([leaf.der], suppress_certificate_expired=True)
    assert result.code is C.REVOKED
    assert result.suppressed == [C.TIME_INVALID]


# --- revocation --------------------------------------------------------------------------------------------


def test_missing_leaf_crl_and_its_suppression(pki: Pki) -> None:
    pki.ica_crl = None
    result = pki.validate()
    assert (result.code, result.failed_index) == (C.REVOCATION_UNKNOWN, 0)
    assert status_code(result) == 0x801B0000
    ok = pki.validate(suppress_revocation_status_unknown=True)
    assert ok.ok and ok.suppressed == [C.REVOCATION_UNKNOWN]
    # The issuer flag does not cover the leaf.
    assert pki.validate(suppress_issuer_revocation_status_unknown=True).code is C.REVOCATION_UNKNOWN


def test_missing_root_crl_is_issuer_revocation_unknown(pki: Pki) -> None:
    pki.root_crl = None
    result = pki.validate()
    assert (result.code, result.failed_index) == (C.ISSUER_REVOCATION_UNKNOWN, 1)
    assert status_code(result) == 0x801C0000
    assert pki.validate(suppress_revocation_status_unknown=True).code is C.ISSUER_REVOCATION_UNKNOWN
    assert pki.validate(suppress_issuer_revocation_status_unknown=True).ok


def test_revoked_leaf(pki: Pki) -> None:
    pki.ica_crl = make_crl(pki.ica, [12345, pki.leaf.cert.serial_number, 67890])
    result = pki.validate(**ALL_SUPPRESSED)
    assert (result.code, result.failed_index) == (C.REVOKED, 0)
    assert f"{pki.leaf.cert.serial_number:x}" in result.reason


def test_revoked_intermediate(pki: Pki) -> None:
    pki.root_crl = make_crl(pki.root, [pki.ica.cert.serial_number])
    result = pki.validate(**ALL_SUPPRESSED)
    assert (result.code, result.failed_index) == (C.ISSUER_REVOKED, 1)
    assert status_code(result) == 0x801E0000


def test_crl_signed_by_the_wrong_key(pki: Pki) -> None:
    # Right issuer name, wrong key: an attacker's "all good" CRL must not count.
    pki.ica_crl = make_crl(pki.ica, [], signer_key=_key(pki.kind, "attacker"))
    result = pki.validate()
    assert (result.code, result.failed_index) == (C.REVOCATION_UNKNOWN, 0)
    assert "not signed" in result.reason


def test_wrong_key_crl_does_not_hide_a_revocation(pki: Pki) -> None:
    good = make_crl(pki.ica, [pki.leaf.cert.serial_number])
    forged = make_crl(pki.ica, [], signer_key=_key(pki.kind, "attacker"), this_update=NOW - timedelta(hours=1))
    trust = TrustListContent(trusted_certificates=[pki.root.der], trusted_crls=[pki.root_crl or b""],
                             issuer_certificates=[pki.ica.der], issuer_crls=[forged, good])
    result = CertificateValidator(trust).validate([pki.leaf.der], ValidationOptions(at=NOW))
    assert result.code is C.REVOKED


def test_expired_crl(pki: Pki) -> None:
    pki.ica_crl = make_crl(pki.ica, [], this_update=NOW - timedelta(days=10), next_update=NOW - timedelta(days=3))
    result = pki.validate()
    assert (result.code, result.failed_index) == (C.REVOCATION_UNKNOWN, 0)
    assert "expired" in result.reason


def test_crl_not_yet_valid(pki: Pki) -> None:
    pki.ica_crl = make_crl(pki.ica, [], this_update=NOW + timedelta(hours=1), next_update=NOW + timedelta(days=7))
    assert pki.validate().code is C.REVOCATION_UNKNOWN


def test_newest_crl_wins(pki: Pki) -> None:
    older = make_crl(pki.ica, [pki.leaf.cert.serial_number], this_update=NOW - timedelta(days=2))
    newer = make_crl(pki.ica, [], this_update=NOW - timedelta(hours=1))  # e.g. a lifted certificateHold
    trust = TrustListContent(trusted_certificates=[pki.root.der], trusted_crls=[pki.root_crl or b""],
                             issuer_certificates=[pki.ica.der], issuer_crls=[older, newer])
    assert CertificateValidator(trust).validate([pki.leaf.der], ValidationOptions(at=NOW)).ok


def test_issuer_without_crl_sign_cannot_vouch_for_revocation(pki: Pki) -> None:
    ica = make_cert("Issuing CA", pki.ica.key, pki.root, ca=True, key_usage=_key_usage("key_cert_sign"))
    pki.issuers = [ica.der]
    assert pki.validate().code is C.REVOCATION_UNKNOWN


def test_crls_are_parsed_once(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    validator = pki.validator()

    def no_parsing(*_: object) -> object:
        raise AssertionError("CRL parsed during validate()")

    monkeypatch.setattr(x509, "load_der_x509_crl", no_parsing)
    for _ in range(3):
        assert validator.validate([pki.leaf.der], ValidationOptions(at=NOW)).ok


class FakeSource:
    """A RevocationSource with a fixed answer per certificate serial (None = ask the CRLs)."""

    def __init__(self, answers: dict[int, RevocationStatus | None]) -> None:
        self.answers = answers
        self.calls: list[tuple[int, int]] = []

    def status(self, cert: x509.Certificate, issuer: x509.Certificate) -> RevocationStatus | None:
        self.calls.append((cert.serial_number, issuer.serial_number))
        return self.answers.get(cert.serial_number)


def _validate_with(pki: Pki, source: FakeSource, **options: object) -> ValidationResult:
    return pki.validator(source).validate([pki.leaf.der], ValidationOptions(at=NOW, **options))  # type: ignore[arg-type]


def test_revocation_source_is_asked_first(pki: Pki) -> None:
    leaf_serial, ica_serial = pki.leaf.cert.serial_number, pki.ica.cert.serial_number
    # Source says revoked although the CRL is clean.
    source = FakeSource({leaf_serial: RevocationStatus.REVOKED})
    assert _validate_with(pki, source).code is C.REVOKED
    assert (leaf_serial, ica_serial) in source.calls
    # Source says good although the CRL lists the leaf: the source is authoritative for its issuer.
    pki.ica_crl = make_crl(pki.ica, [leaf_serial])
    assert _validate_with(pki, FakeSource({leaf_serial: RevocationStatus.GOOD})).ok
    # Source does not know the issuer: the CRL decides.
    assert _validate_with(pki, FakeSource({leaf_serial: None})).code is C.REVOKED
    # Source answers unknown: suppressible like a missing CRL.
    unknown = FakeSource({leaf_serial: RevocationStatus.UNKNOWN})
    assert _validate_with(pki, unknown).code is C.REVOCATION_UNKNOWN
    assert _validate_with(pki, unknown, suppress_revocation_status_unknown=True).code is C.GOOD
    # And for the intermediate.
    pki.ica_crl = make_crl(pki.ica)
    assert _validate_with(pki, FakeSource({ica_serial: RevocationStatus.REVOKED})).code is C.ISSUER_REVOKED


def test_failing_revocation_source_falls_back_to_crls(pki: Pki) -> None:
    class Broken:
        def status(self, cert: x509.Certificate, issuer: x509.Certificate) -> RevocationStatus | None:
            raise ConnectionError("inventory database unreachable")

    validator = pki.validator(Broken())
    assert validator.validate([pki.leaf.der], ValidationOptions(at=NOW)).ok
    pki.ica_crl = make_crl(pki.ica, [pki.leaf.cert.serial_number])
    result = pki.validator(Broken()).validate([pki.leaf.der], ValidationOptions(at=NOW))
    assert result.code is C.REVOKED


def test_suppressed_codes_are_listed_once() -> None:
    pki = build_pki()
    root = make_cert("Root CA", pki.root.key, None, ca=True, not_after=NOW - timedelta(days=1))
    ica = make_cert("Issuing CA", pki.ica.key, root, ca=True, not_after=NOW - timedelta(days=1))
    pki.trusted, pki.issuers = [root.der], [ica.der]
    assert pki.validate().code is C.ISSUER_TIME_INVALID
    result = pki.validate(suppress_issuer_certificate_expired=True)
    assert result.ok and result.suppressed == [C.ISSUER_TIME_INVALID]
