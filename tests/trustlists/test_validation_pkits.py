"""NIST PKITS (the copy shipped in cryptography_vectors) against trustlists.validation.

Setup: the trust list holds "Trust Anchor Root Certificate" and its CRL as trusted, and every other CA
certificate and CRL of PKITS (all sections, not only the ones in scope) as issuer certificates / issuer
CRLs. Each end-entity certificate is then validated on its own, so the validator has to find its path
among ~190 CAs, several of which share a name (key rollover, separate CRL signing keys). Validation time
is fixed at 2015-01-01, inside every certificate's and CRL's validity except the ones PKITS makes
expired or not yet valid on purpose (PKITS CRLs run from 2010-01-01 to 2030-12-31).

In scope (every case listed in CASES runs and must pass; there are no skips):
- 4.1 Signature Verification: 4.1.1-4.1.4, 4.1.6
- 4.2 Validity Periods: 4.2.1-4.2.8
- 4.3 Verifying Name Chaining: 4.3.1-4.3.11
- 4.4 Basic Certificate Revocation: 4.4.1-4.4.21 (incl. two CRLs, unknown critical CRL (entry)
  extensions, old/pre-2000 nextUpdate, negative and long serials, separate certificate and CRL keys)
- 4.5 Verifying Paths with Self-Issued Certificates: 4.5.1-4.5.8 (key rollover, CRL signing key)
- 4.6 Verifying Basic Constraints: 4.6.1-4.6.17 (incl. pathLenConstraint with self-issued certificates)
- 4.7 Key Usage: 4.7.1-4.7.5
- 4.16 Private Certificate Extensions: 4.16.1-4.16.2

Excluded:
- 4.1.5 Valid DSA Parameter Inheritance: cryptography cannot parse a DSA key whose parameters are
  inherited from the issuer (OPC UA has no DSA profile), so the certificate is CERTIFICATE_INVALID.
- 4.8 Certificate Policies, 4.9 Require Explicit Policy, 4.10 Policy Mappings, 4.11 Inhibit Policy
  Mapping, 4.12 Inhibit Any Policy: the validator does no policy processing (any policy is accepted,
  critical policyConstraints/policyMappings/inhibitAnyPolicy make a certificate invalid).
- 4.13 Name Constraints: not implemented (a critical nameConstraints makes a certificate invalid).
- 4.14 Distribution Points and 4.15 Delta-CRLs: only complete CRLs, optionally scoped by an
  issuingDistributionPoint full name / onlyContainsUser/CACerts, are supported.

Part 4 codes chosen where PKITS only says "invalid" (see EXPECTED below): a CRL that exists but cannot
be used (bad signature, wrong issuer name, unknown critical extension, stale, issuer without cRLSign,
revoked CRL signer) gives REVOCATION_UNKNOWN, because Part 4 step 10 ("find revocation list") is where it
fails; name chaining failures give CHAIN_INCOMPLETE; basicConstraints, keyUsage keyCertSign and
pathLenConstraint failures of a CA give ISSUER_USE_NOT_ALLOWED; an unknown critical extension gives
CERTIFICATE_INVALID.
"""

from __future__ import annotations

import pathlib
import warnings
from datetime import UTC, datetime

import cryptography_vectors
import pytest

from opcua_gds.validation_status import STATUS_CODES, status_code
from trustlists.models import TrustListContent
from trustlists.validation import CertificateValidator, ValidationCode, ValidationOptions

PKITS = pathlib.Path(cryptography_vectors.__path__[0]) / "x509" / "PKITS_data"
AT = datetime(2015, 1, 1, tzinfo=UTC)
ANCHOR = "TrustAnchorRootCertificate.crt"
ANCHOR_CRL = "TrustAnchorRootCRL.crl"

C = ValidationCode
# (PKITS test number, end-entity file stem, expected code, expected failed_index: 0 = the EE, 1 = its issuer).
CASES: list[tuple[str, str, ValidationCode, int | None]] = [
    # 4.1 Signature Verification
    ("4.1.1", "ValidCertificatePathTest1", C.GOOD, None),
    ("4.1.2", "InvalidCASignatureTest2", C.CERTIFICATE_INVALID, 1),
    ("4.1.3", "InvalidEESignatureTest3", C.CERTIFICATE_INVALID, 0),
    ("4.1.4", "ValidDSASignaturesTest4", C.GOOD, None),
    ("4.1.6", "InvalidDSASignatureTest6", C.CERTIFICATE_INVALID, 0),
    # 4.2 Validity Periods
    ("4.2.1", "InvalidCAnotBeforeDateTest1", C.ISSUER_TIME_INVALID, 1),
    ("4.2.2", "InvalidEEnotBeforeDateTest2", C.TIME_INVALID, 0),
    ("4.2.3", "Validpre2000UTCnotBeforeDateTest3", C.GOOD, None),
    ("4.2.4", "ValidGeneralizedTimenotBeforeDateTest4", C.GOOD, None),
    ("4.2.5", "InvalidCAnotAfterDateTest5", C.ISSUER_TIME_INVALID, 1),
    ("4.2.6", "InvalidEEnotAfterDateTest6", C.TIME_INVALID, 0),
    ("4.2.7", "Invalidpre2000UTCEEnotAfterDateTest7", C.TIME_INVALID, 0),
    ("4.2.8", "ValidGeneralizedTimenotAfterDateTest8", C.GOOD, None),
    # 4.3 Verifying Name Chaining
    ("4.3.1", "InvalidNameChainingTest1", C.CHAIN_INCOMPLETE, 0),
    ("4.3.2", "InvalidNameChainingOrderTest2", C.CHAIN_INCOMPLETE, 0),
    ("4.3.3", "ValidNameChainingWhitespaceTest3", C.GOOD, None),
    ("4.3.4", "ValidNameChainingWhitespaceTest4", C.GOOD, None),
    ("4.3.5", "ValidNameChainingCapitalizationTest5", C.GOOD, None),
    ("4.3.6", "ValidNameUIDsTest6", C.GOOD, None),
    ("4.3.7", "ValidRFC3280MandatoryAttributeTypesTest7", C.GOOD, None),
    ("4.3.8", "ValidRFC3280OptionalAttributeTypesTest8", C.GOOD, None),
    ("4.3.9", "ValidUTF8StringEncodedNamesTest9", C.GOOD, None),
    ("4.3.10", "ValidRolloverfromPrintableStringtoUTF8StringTest10", C.GOOD, None),
    ("4.3.11", "ValidUTF8StringCaseInsensitiveMatchTest11", C.GOOD, None),
    # 4.4 Basic Certificate Revocation Tests
    ("4.4.1", "InvalidMissingCRLTest1", C.REVOCATION_UNKNOWN, 0),
    ("4.4.2", "InvalidRevokedCATest2", C.ISSUER_REVOKED, 1),
    ("4.4.3", "InvalidRevokedEETest3", C.REVOKED, 0),
    ("4.4.4", "InvalidBadCRLSignatureTest4", C.REVOCATION_UNKNOWN, 0),
    ("4.4.5", "InvalidBadCRLIssuerNameTest5", C.REVOCATION_UNKNOWN, 0),
    ("4.4.6", "InvalidWrongCRLTest6", C.REVOCATION_UNKNOWN, 0),
    ("4.4.7", "ValidTwoCRLsTest7", C.GOOD, None),
    ("4.4.8", "InvalidUnknownCRLEntryExtensionTest8", C.REVOCATION_UNKNOWN, 0),
    ("4.4.9", "InvalidUnknownCRLExtensionTest9", C.REVOCATION_UNKNOWN, 0),
    ("4.4.10", "InvalidUnknownCRLExtensionTest10", C.REVOCATION_UNKNOWN, 0),
    ("4.4.11", "InvalidOldCRLnextUpdateTest11", C.REVOCATION_UNKNOWN, 0),
    ("4.4.12", "Invalidpre2000CRLnextUpdateTest12", C.REVOCATION_UNKNOWN, 0),
    ("4.4.13", "ValidGeneralizedTimeCRLnextUpdateTest13", C.GOOD, None),
    ("4.4.14", "ValidNegativeSerialNumberTest14", C.GOOD, None),
    ("4.4.15", "InvalidNegativeSerialNumberTest15", C.REVOKED, 0),
    ("4.4.16", "ValidLongSerialNumberTest16", C.GOOD, None),
    ("4.4.17", "ValidLongSerialNumberTest17", C.GOOD, None),
    ("4.4.18", "InvalidLongSerialNumberTest18", C.REVOKED, 0),
    ("4.4.19", "ValidSeparateCertificateandCRLKeysTest19", C.GOOD, None),
    ("4.4.20", "InvalidSeparateCertificateandCRLKeysTest20", C.REVOKED, 0),
    ("4.4.21", "InvalidSeparateCertificateandCRLKeysTest21", C.REVOCATION_UNKNOWN, 0),
    # 4.5 Verifying Paths with Self-Issued Certificates
    ("4.5.1", "ValidBasicSelfIssuedOldWithNewTest1", C.GOOD, None),
    ("4.5.2", "InvalidBasicSelfIssuedOldWithNewTest2", C.REVOKED, 0),
    ("4.5.3", "ValidBasicSelfIssuedNewWithOldTest3", C.GOOD, None),
    ("4.5.4", "ValidBasicSelfIssuedNewWithOldTest4", C.GOOD, None),
    ("4.5.5", "InvalidBasicSelfIssuedNewWithOldTest5", C.REVOKED, 0),
    ("4.5.6", "ValidBasicSelfIssuedCRLSigningKeyTest6", C.GOOD, None),
    ("4.5.7", "InvalidBasicSelfIssuedCRLSigningKeyTest7", C.REVOKED, 0),
    ("4.5.8", "InvalidBasicSelfIssuedCRLSigningKeyTest8", C.ISSUER_USE_NOT_ALLOWED, 1),
    # 4.6 Verifying Basic Constraints
    ("4.6.1", "InvalidMissingbasicConstraintsTest1", C.ISSUER_USE_NOT_ALLOWED, 1),
    ("4.6.2", "InvalidcAFalseTest2", C.ISSUER_USE_NOT_ALLOWED, 1),
    ("4.6.3", "InvalidcAFalseTest3", C.ISSUER_USE_NOT_ALLOWED, 1),
    ("4.6.4", "ValidbasicConstraintsNotCriticalTest4", C.GOOD, None),
    ("4.6.5", "InvalidpathLenConstraintTest5", C.ISSUER_USE_NOT_ALLOWED, 1),
    ("4.6.6", "InvalidpathLenConstraintTest6", C.ISSUER_USE_NOT_ALLOWED, 1),
    ("4.6.7", "ValidpathLenConstraintTest7", C.GOOD, None),
    ("4.6.8", "ValidpathLenConstraintTest8", C.GOOD, None),
    ("4.6.9", "InvalidpathLenConstraintTest9", C.ISSUER_USE_NOT_ALLOWED, 1),
    ("4.6.10", "InvalidpathLenConstraintTest10", C.ISSUER_USE_NOT_ALLOWED, 1),
    ("4.6.11", "InvalidpathLenConstraintTest11", C.ISSUER_USE_NOT_ALLOWED, 1),
    ("4.6.12", "InvalidpathLenConstraintTest12", C.ISSUER_USE_NOT_ALLOWED, 1),
    ("4.6.13", "ValidpathLenConstraintTest13", C.GOOD, None),
    ("4.6.14", "ValidpathLenConstraintTest14", C.GOOD, None),
    ("4.6.15", "ValidSelfIssuedpathLenConstraintTest15", C.GOOD, None),
    ("4.6.16", "InvalidSelfIssuedpathLenConstraintTest16", C.ISSUER_USE_NOT_ALLOWED, 1),
    ("4.6.17", "ValidSelfIssuedpathLenConstraintTest17", C.GOOD, None),
    # 4.7 Key Usage
    ("4.7.1", "InvalidkeyUsageCriticalkeyCertSignFalseTest1", C.ISSUER_USE_NOT_ALLOWED, 1),
    ("4.7.2", "InvalidkeyUsageNotCriticalkeyCertSignFalseTest2", C.ISSUER_USE_NOT_ALLOWED, 1),
    ("4.7.3", "ValidkeyUsageNotCriticalTest3", C.GOOD, None),
    ("4.7.4", "InvalidkeyUsageCriticalcRLSignFalseTest4", C.REVOCATION_UNKNOWN, 0),
    ("4.7.5", "InvalidkeyUsageNotCriticalcRLSignFalseTest5", C.REVOCATION_UNKNOWN, 0),
    # 4.16 Private Certificate Extensions
    ("4.16.1", "ValidUnknownNotCriticalCertificateExtensionTest1", C.GOOD, None),
    ("4.16.2", "InvalidUnknownCriticalCertificateExtensionTest2", C.CERTIFICATE_INVALID, 0),
]


def _read(kind: str, name: str) -> bytes:
    return (PKITS / kind / name).read_bytes()


def _load_ee(stem: str) -> bytes:
    return _read("certs", f"{stem}EE.crt")


@pytest.fixture(scope="module")
def trust() -> TrustListContent:
    ca_files = sorted(p for p in (PKITS / "certs").glob("*.crt")
                      if not p.name.endswith("EE.crt") and p.name != ANCHOR)
    crl_files = sorted(p for p in (PKITS / "crls").glob("*.crl") if p.name != ANCHOR_CRL)
    return TrustListContent(
        trusted_certificates=[_read("certs", ANCHOR)],
        trusted_crls=[_read("crls", ANCHOR_CRL)],
        issuer_certificates=[p.read_bytes() for p in ca_files],
        issuer_crls=[p.read_bytes() for p in crl_files],
    )


@pytest.fixture(scope="module")
def validator(trust: TrustListContent) -> CertificateValidator:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PKITS has a negative serial on purpose
        return CertificateValidator(trust)


def test_case_table_matches_pkits_files() -> None:
    """The table is the scope: every file exists and Valid/Invalid in its name agrees with the code."""
    assert len(CASES) == 77  # 5 + 8 + 11 + 21 + 8 + 17 + 5 + 2
    assert len({number for number, *_ in CASES}) == len(CASES)
    for _, stem, code, _ in CASES:
        assert (PKITS / "certs" / f"{stem}EE.crt").is_file(), stem
        assert stem.startswith("Valid") == (code is C.GOOD), stem


def test_unparseable_trust_list_entry_is_skipped(validator: CertificateValidator) -> None:
    # DSAParametersInheritedCACert cannot be parsed by cryptography; it must not break the trust list.
    assert len(validator.skipped) == 1
    assert "certificate" in validator.skipped[0]


@pytest.mark.parametrize(("number", "stem", "expected", "index"), CASES, ids=[c[0] for c in CASES])
def test_pkits(validator: CertificateValidator, number: str, stem: str, expected: ValidationCode,
               index: int | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = validator.validate([_load_ee(stem)], ValidationOptions(at=AT))
    assert result.code is expected, f"{number} {stem}: {result.reason}"
    assert result.ok == stem.startswith("Valid")
    assert status_code(result) == STATUS_CODES[expected]  # what an OPC UA peer is told
    if result.ok:
        assert result.failed_index is None
        assert result.chain[-1] == _read("certs", ANCHOR)
    else:
        assert result.failed_index == index, result.reason
    assert result.chain and result.chain[0] == _load_ee(stem)


def test_missing_crl_can_be_suppressed(validator: CertificateValidator) -> None:
    options = ValidationOptions(at=AT, suppress_revocation_status_unknown=True)
    result = validator.validate([_load_ee("InvalidMissingCRLTest1")], options)
    assert result.code is C.GOOD
    assert result.suppressed == [C.REVOCATION_UNKNOWN]


def test_suppression_does_not_hide_a_revoked_certificate(validator: CertificateValidator) -> None:
    options = ValidationOptions(at=AT, suppress_revocation_status_unknown=True,
                                suppress_issuer_revocation_status_unknown=True,
                                suppress_certificate_expired=True, suppress_issuer_certificate_expired=True)
    assert validator.validate([_load_ee("InvalidRevokedEETest3")], options).code is C.REVOKED
    assert validator.validate([_load_ee("InvalidRevokedCATest2")], options).code is C.ISSUER_REVOKED


def test_expired_ca_can_be_suppressed(validator: CertificateValidator) -> None:
    options = ValidationOptions(at=AT, suppress_issuer_certificate_expired=True)
    result = validator.validate([_load_ee("InvalidCAnotAfterDateTest5")], options)
    assert result.code is C.GOOD
    assert result.suppressed == [C.ISSUER_TIME_INVALID]


def test_intermediate_offered_in_the_chain_instead_of_the_trust_list() -> None:
    """Only the anchor and the CRLs in the trust list: the peer sends Good CA along with its leaf."""
    trust = TrustListContent(trusted_certificates=[_read("certs", ANCHOR)],
                             trusted_crls=[_read("crls", ANCHOR_CRL), _read("crls", "GoodCACRL.crl")])
    validator = CertificateValidator(trust)
    leaf = _load_ee("ValidCertificatePathTest1")
    good_ca = _read("certs", "GoodCACert.crt")
    options = ValidationOptions(at=AT)
    assert validator.validate([leaf], options).code is C.CHAIN_INCOMPLETE
    result = validator.validate([leaf, good_ca], options)
    assert result.code is C.GOOD, result.reason
    assert result.chain == [leaf, good_ca, _read("certs", ANCHOR)]
    assert validator.validate([_load_ee("InvalidRevokedEETest3"), good_ca], options).code is C.REVOKED


def test_anchor_only_in_issuer_list_is_untrusted(trust: TrustListContent) -> None:
    untrusted = TrustListContent(issuer_certificates=[*trust.trusted_certificates, *trust.issuer_certificates],
                                 issuer_crls=[*trust.trusted_crls, *trust.issuer_crls])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        validator = CertificateValidator(untrusted)
    result = validator.validate([_load_ee("ValidCertificatePathTest1")], ValidationOptions(at=AT))
    assert result.code is C.UNTRUSTED
