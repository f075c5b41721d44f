"""Certificate chain validation in the order, and with the outcomes, of OPC UA Part 4 §6.1.3.

Why our own validator: `cryptography.x509.verification` does no revocation checking and reports errors
that do not tell the Part 4 outcomes apart, and the protocol fronts (OPC UA sessions, MQTT connects) need
exactly those outcomes plus the TrustListValidationOptions suppression bits. The outcomes are the engine's
own `ValidationCode`; each front translates them into its protocol's words (a StatusCode, a refusal reason).

The checks run step by step in the Part 4 order; inside a step the leaf comes first, then its issuers
towards the root. The first error that is not suppressed is the result. Suppressed errors are listed in
`ValidationResult.suppressed` so that callers can still log them.

Path building follows RFC 4158 loosely: issuers are found by (normalised) subject name, candidates whose
subjectKeyIdentifier matches the child's authorityKeyIdentifier are tried first, and alternatives (CAs
that share a name, key rollover certificates) are tried until one path validates. When none does, the
error of the path that got furthest through the Part 4 steps is reported.

Everything that depends only on the trust list (parsed certificates, CRL signatures, revoked-serial sets)
is computed once in `CertificateValidator.__init__`; a validation call parses only what the peer sent
and does one signature check per certificate that is not already known.

Not supported (by design, reported as errors rather than silently ignored where it matters for safety):
certificate policies (any policy is accepted, as with an initial policy set of anyPolicy), name
constraints and policy constraints (a critical one makes the certificate invalid), delta CRLs, indirect
CRLs, CRLs partitioned by reason, and DSA parameter inheritance.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum, IntEnum, StrEnum
from itertools import islice
from typing import Literal, Protocol, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import (
    CRLEntryExtensionOID,
    ExtendedKeyUsageOID,
    ExtensionOID,
    SignatureAlgorithmOID,
)
from pydantic import BaseModel, ConfigDict, Field

from trustlists.models import TrustListContent

__all__ = [
    "CertificateValidator",
    "RevocationSource",
    "RevocationStatus",
    "ValidationCode",
    "ValidationOptions",
    "ValidationResult",
]

_log = logging.getLogger(__name__)


class ValidationCode(StrEnum):
    """Why a chain is (not) valid, in the engine's words: one member per Part 4 §6.1.3 outcome.

    The fronts translate: `opcua_gds.validation_status` maps each to the StatusCode Part 4 names for it (the
    member names follow those StatusCodes), `mqtt_broker_auth.decision` to its refusal reasons.
    """

    GOOD = "good"
    CERTIFICATE_INVALID = "certificate_invalid"
    CHAIN_INCOMPLETE = "chain_incomplete"
    POLICY_CHECK_FAILED = "policy_check_failed"
    UNTRUSTED = "untrusted"
    TIME_INVALID = "time_invalid"
    ISSUER_TIME_INVALID = "issuer_time_invalid"
    HOST_NAME_INVALID = "host_name_invalid"
    URI_INVALID = "uri_invalid"
    USE_NOT_ALLOWED = "use_not_allowed"
    ISSUER_USE_NOT_ALLOWED = "issuer_use_not_allowed"
    REVOCATION_UNKNOWN = "revocation_unknown"
    ISSUER_REVOCATION_UNKNOWN = "issuer_revocation_unknown"
    REVOKED = "revoked"
    ISSUER_REVOKED = "issuer_revoked"


class RevocationStatus(Enum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


class RevocationSource(Protocol):
    """Revocation answers from elsewhere (the CA's own inventory, OCSP, ...), asked before the CRLs."""

    def status(self, cert: x509.Certificate, issuer: x509.Certificate) -> RevocationStatus | None:
        """The status of `cert`, or None when this source does not know `issuer` (then CRLs decide)."""
        ...


class ValidationOptions(BaseModel):
    """What to check besides the chain itself, and which errors to suppress (TrustListValidationOptions)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: datetime | None = None  # the validation time; None = now (naive datetimes are taken as UTC)
    application_uri: str | None = None  # leaf SAN URI must equal it
    hostname: str | None = None  # leaf SAN dNSName/iPAddress must match it
    required_eku: Literal["serverAuth", "clientAuth"] | None = None
    # Part 6 §6.2.2 leaf keyUsage: digitalSignature always; RSA keys also keyEncipherment and
    # dataEncipherment, because OPC UA encrypts the asymmetric message body (not only keys) with RSA.
    opcua_application: bool = False
    min_rsa_bits: int | None = None  # leaf RSA key length bounds of the security policy (Part 7)
    max_rsa_bits: int | None = None
    reject_weak_hashes: bool = False  # MD5 / SHA-1 certificate signatures fail the policy check
    suppress_certificate_expired: bool = False
    suppress_host_name_invalid: bool = False
    suppress_revocation_status_unknown: bool = False
    suppress_issuer_certificate_expired: bool = False
    suppress_issuer_revocation_status_unknown: bool = False


class ValidationResult(BaseModel):
    code: ValidationCode
    reason: str
    failed_index: int | None = None  # index in `chain` (0 = leaf); for unparseable input, in the input
    chain: list[bytes] = Field(default_factory=list)  # DER as built: leaf first, anchor last
    suppressed: list[ValidationCode] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.code is ValidationCode.GOOD


# ---------------------------------------------------------------------------------------------------------
# Parsed certificates and CRLs

NameKey = tuple[tuple[tuple[str, object], ...], ...]


def _name_key(name: x509.Name) -> NameKey:
    """RFC 5280 §7.1 name comparison, simplified from RFC 4518: case folded, whitespace collapsed.

    RDN order matters; attribute order inside a multi-valued RDN does not.
    """
    rdns = []
    for rdn in name.rdns:
        attrs = []
        for attr in rdn:
            value = attr.value
            if isinstance(value, str):
                value = " ".join(value.split()).casefold()
            attrs.append((attr.oid.dotted_string, value))
        rdns.append(tuple(attrs) if len(attrs) == 1 else tuple(sorted(attrs, key=repr)))
    return tuple(rdns)


def _general_name_key(gn: x509.GeneralName) -> tuple[str, object]:
    if isinstance(gn, x509.DirectoryName):
        return ("dn", _name_key(gn.value))
    return (type(gn).__name__, gn.value)


def _describe(name: x509.Name) -> str:
    try:
        return name.rfc4514_string() or "<empty name>"
    except ValueError:
        return "<unprintable name>"


# Extensions we either process or that cannot change the outcome when ignored; a critical extension
# outside this set makes the certificate invalid (RFC 5280 §4.2). certificatePolicies is accepted as if the
# initial policy set were anyPolicy, which is what OPC UA applications use.
_KNOWN_CERT_EXTENSIONS = frozenset({
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.KEY_USAGE,
    ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    ExtensionOID.ISSUER_ALTERNATIVE_NAME,
    ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    ExtensionOID.CERTIFICATE_POLICIES,
    ExtensionOID.CRL_DISTRIBUTION_POINTS,
    ExtensionOID.FRESHEST_CRL,
    ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
    ExtensionOID.SUBJECT_INFORMATION_ACCESS,
})

_UNSET = object()


class _Cert:
    """A certificate with the facts validation needs, extracted once."""

    __slots__ = (
        "_label", "_public_key", "aki", "basic", "cert", "crl_dp_keys", "der", "eku", "fp", "in_trust_list",
        "issuer_key", "key_usage", "problem", "san", "self_issued", "ski", "subject_key",
    )

    def __init__(self, cert: x509.Certificate, der: bytes) -> None:
        self.cert = cert
        self.der = der
        self.fp = hashlib.sha256(der).digest()
        self._label: str | None = None
        self.subject_key = _name_key(cert.subject)
        self.issuer_key = _name_key(cert.issuer)
        self.self_issued = self.subject_key == self.issuer_key
        self.problem: str | None = None
        self.in_trust_list = False  # set by the validator; decides which cache a result may live in
        self.ski: bytes | None = None
        self.aki: bytes | None = None
        self.basic: x509.BasicConstraints | None = None
        self.key_usage: x509.KeyUsage | None = None
        self.eku: x509.ExtendedKeyUsage | None = None
        self.san: x509.SubjectAlternativeName | None = None
        self.crl_dp_keys: frozenset[tuple[str, object]] = frozenset()
        self._public_key: object = _UNSET
        if cert.version is not x509.Version.v3:
            self.problem = "is not an X.509 v3 certificate"
        try:
            self._read_extensions(cert.extensions)
        except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
            self.problem = f"has malformed extensions ({exc})"

    def _read_extensions(self, extensions: x509.Extensions) -> None:
        for ext in extensions:
            value = ext.value
            if isinstance(value, x509.SubjectKeyIdentifier):
                self.ski = value.digest
            elif isinstance(value, x509.AuthorityKeyIdentifier):
                self.aki = value.key_identifier
            elif isinstance(value, x509.BasicConstraints):
                self.basic = value
            elif isinstance(value, x509.KeyUsage):
                self.key_usage = value
            elif isinstance(value, x509.ExtendedKeyUsage):
                self.eku = value
            elif isinstance(value, x509.SubjectAlternativeName):
                self.san = value
            elif isinstance(value, x509.CRLDistributionPoints):
                self.crl_dp_keys = frozenset(
                    _general_name_key(gn) for dp in value for gn in (dp.full_name or ()))
            elif ext.critical and ext.oid not in _KNOWN_CERT_EXTENSIONS and self.problem is None:
                self.problem = f"has an unsupported critical extension {ext.oid.dotted_string}"

    @property
    def label(self) -> str:
        # Only needed for messages; formatting a name costs as much as parsing it.
        if self._label is None:
            self._label = _describe(self.cert.subject)
        return self._label

    @property
    def public_key(self) -> object | None:
        # Loaded lazily: most leaves never need their own key (only the policy check and self-signed ones).
        if self._public_key is _UNSET:
            try:
                self._public_key = self.cert.public_key()
            except (ValueError, UnsupportedAlgorithm):
                self._public_key = None
        return self._public_key

    @property
    def is_ca(self) -> bool:
        return self.basic is not None and self.basic.ca

    @property
    def may_sign_crls(self) -> bool:
        return self.key_usage is None or self.key_usage.crl_sign


def _verify_signature(key: object, signature: bytes, data: bytes, oid: x509.ObjectIdentifier,
                      hash_alg: object, params: object) -> bool:
    """Check a signature with the issuer key; the key type must match the signature algorithm."""
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if not (isinstance(params, padding.PKCS1v15 | padding.PSS) and isinstance(hash_alg, hashes.HashAlgorithm)):
                return False
            key.verify(signature, data, params, hash_alg)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if not isinstance(params, ec.ECDSA):
                return False
            key.verify(signature, data, params)
        elif isinstance(key, ed25519.Ed25519PublicKey):
            if oid != SignatureAlgorithmOID.ED25519:
                return False
            key.verify(signature, data)
        elif isinstance(key, ed448.Ed448PublicKey):
            if oid != SignatureAlgorithmOID.ED448:
                return False
            key.verify(signature, data)
        elif isinstance(key, dsa.DSAPublicKey):
            if not isinstance(hash_alg, hashes.HashAlgorithm) or oid not in _DSA_OIDS:
                return False
            key.verify(signature, data, hash_alg)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


_DSA_OIDS = frozenset({SignatureAlgorithmOID.DSA_WITH_SHA1, SignatureAlgorithmOID.DSA_WITH_SHA224,
                       SignatureAlgorithmOID.DSA_WITH_SHA256, SignatureAlgorithmOID.DSA_WITH_SHA384,
                       SignatureAlgorithmOID.DSA_WITH_SHA512})


def _signed_object_parts(obj: x509.Certificate | x509.CertificateRevocationList
                         ) -> tuple[bytes, bytes, x509.ObjectIdentifier, object, object] | None:
    try:
        tbs = obj.tbs_certificate_bytes if isinstance(obj, x509.Certificate) else obj.tbs_certlist_bytes
        return (obj.signature, tbs, obj.signature_algorithm_oid, obj.signature_hash_algorithm,
                obj.signature_algorithm_parameters)
    except (ValueError, UnsupportedAlgorithm):
        return None


def _cert_signed_by(child: _Cert, issuer: _Cert) -> bool:
    parts = _signed_object_parts(child.cert)
    return parts is not None and _verify_signature(issuer.public_key, *parts)


# CRL extensions we understand; anything else critical makes the CRL unusable (RFC 5280 §5.2).
_KNOWN_CRL_EXTENSIONS = frozenset({
    ExtensionOID.CRL_NUMBER,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    ExtensionOID.ISSUER_ALTERNATIVE_NAME,
    ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
    ExtensionOID.FRESHEST_CRL,
    ExtensionOID.ISSUING_DISTRIBUTION_POINT,
})
_KNOWN_CRL_ENTRY_EXTENSIONS = frozenset({
    CRLEntryExtensionOID.CRL_REASON,
    CRLEntryExtensionOID.INVALIDITY_DATE,
})


class _Crl:
    """A CRL with its revoked serials as a set (a CRL's own lookup is a linear scan)."""

    __slots__ = ("crl", "issuer_key", "next_update", "number", "only_ca", "only_user", "problem", "revoked",
                 "scope_names", "this_update")

    def __init__(self, crl: x509.CertificateRevocationList) -> None:
        self.crl = crl
        self.issuer_key = _name_key(crl.issuer)
        self.this_update = crl.last_update_utc
        self.next_update = crl.next_update_utc
        self.number = -1
        self.problem: str | None = None
        self.only_user = False
        self.only_ca = False
        self.scope_names: frozenset[tuple[str, object]] | None = None
        try:
            self._read_extensions(crl.extensions)
        except ValueError as exc:
            self.problem = f"has malformed extensions ({exc})"
        self.revoked = self._read_entries(crl)

    def _read_extensions(self, extensions: x509.Extensions) -> None:
        for ext in extensions:
            value = ext.value
            if isinstance(value, x509.CRLNumber):
                self.number = value.crl_number
            elif isinstance(value, x509.DeltaCRLIndicator):
                self.problem = "is a delta CRL (not supported)"
            elif isinstance(value, x509.IssuingDistributionPoint):
                self._read_scope(value)
            elif ext.critical and ext.oid not in _KNOWN_CRL_EXTENSIONS:
                self.problem = f"has an unsupported critical extension {ext.oid.dotted_string}"

    def _read_scope(self, idp: x509.IssuingDistributionPoint) -> None:
        # Only what a CA publishing one CRL per distribution point needs; partitions by reason, indirect
        # CRLs and attribute-certificate CRLs would need more than a serial lookup to be answered right.
        if (idp.indirect_crl or idp.only_some_reasons or idp.only_contains_attribute_certs
                or idp.relative_name):
            self.problem = "has an issuingDistributionPoint scope that is not supported"
            return
        self.only_user = idp.only_contains_user_certs
        self.only_ca = idp.only_contains_ca_certs
        if idp.full_name:
            self.scope_names = frozenset(_general_name_key(gn) for gn in idp.full_name)

    def _read_entries(self, crl: x509.CertificateRevocationList) -> frozenset[int]:
        serials = set()
        for entry in crl:
            serials.add(entry.serial_number)
            if self.problem is None:
                try:
                    for ext in entry.extensions:
                        if ext.critical and ext.oid not in _KNOWN_CRL_ENTRY_EXTENSIONS:
                            self.problem = (f"has an entry with an unsupported critical extension "
                                            f"{ext.oid.dotted_string}")
                except ValueError as exc:
                    self.problem = f"has an entry with malformed extensions ({exc})"
        return frozenset(serials)

    def covers(self, cert: _Cert) -> bool:
        if self.only_user and cert.is_ca:
            return False
        if self.only_ca and not cert.is_ca:
            return False
        return self.scope_names is None or not self.scope_names.isdisjoint(cert.crl_dp_keys)

    def label(self) -> str:
        return f"the CRL of {_describe(self.crl.issuer)} (thisUpdate {self.this_update:%Y-%m-%d %H:%M}Z)"


# ---------------------------------------------------------------------------------------------------------
# Validation state


class _Step(IntEnum):
    """Part 4 §6.1.3 order; a path that fails at a later step is the better explanation."""

    STRUCTURE = 1
    CHAIN = 2
    SIGNATURE = 3
    POLICY = 4
    TRUST = 5
    VALIDITY = 6
    HOST_NAME = 7
    URI = 8
    USAGE = 9
    FIND_REVOCATION = 10
    REVOCATION = 11
    PASSED = 99


@dataclass(frozen=True, slots=True)
class _Issue:
    code: ValidationCode
    index: int
    reason: str


@dataclass(slots=True)
class _Outcome:
    step: _Step
    issue: _Issue | None
    path: list[_Cert]
    suppressed: list[ValidationCode]


@dataclass(slots=True)
class _Context:
    options: ValidationOptions
    at: datetime
    offered: Mapping[NameKey, list[_Cert]]
    depth: int = 0
    required_root: bytes | None = None  # CRL-signer paths must end at the anchor of the main path


@dataclass(slots=True)
class _PathState:
    path: list[_Cert]
    complete: bool
    ctx: _Context
    revocation: list[tuple[int, RevocationStatus, str]] | None = field(default=None)


_SUPPRESSIBLE: dict[ValidationCode, str] = {
    ValidationCode.TIME_INVALID: "suppress_certificate_expired",
    ValidationCode.ISSUER_TIME_INVALID: "suppress_issuer_certificate_expired",
    ValidationCode.HOST_NAME_INVALID: "suppress_host_name_invalid",
    ValidationCode.REVOCATION_UNKNOWN: "suppress_revocation_status_unknown",
    ValidationCode.ISSUER_REVOCATION_UNKNOWN: "suppress_issuer_revocation_status_unknown",
}

_MAX_CHAIN = 32  # certificates a peer may send; OPC UA chains are 2-4 long, more is an attack or a mistake
_MAX_DEPTH = 12  # longest path we build (PKITS goes to 8)
_MAX_PATHS = 32  # candidate paths evaluated per validation, so that a crafted pool cannot blow up
_MAX_SIGNER_DEPTH = 2  # nesting of "validate the separate CRL signer" inside a validation
_CACHE_LIMIT = 4096  # entries of the per-peer caches before they are dropped and refilled
_WEAK_HASHES = frozenset({"md5", "sha1"})
_EKU_OIDS = {"serverAuth": ExtendedKeyUsageOID.SERVER_AUTH, "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH}
_DEFAULT_OPTIONS = ValidationOptions()
_DER = Encoding.DER


class CertificateValidator:
    """Validates peer certificate chains against one trust list; build once, call `validate` per peer.

    Thread-safe for concurrent `validate` calls: the shared caches only ever gain deterministic entries.
    """

    def __init__(self, trust: TrustListContent, revocation: RevocationSource | None = None) -> None:
        self._revocation_source = revocation
        self._by_der: dict[bytes, _Cert] = {}
        self._by_subject: dict[NameKey, list[_Cert]] = {}
        self._trusted: set[bytes] = set()
        self.skipped: list[str] = []  # trust-list blobs that could not be used, and why
        for der in trust.trusted_certificates:
            cert = self._add_trust_list_cert(der)
            if cert is not None:
                self._trusted.add(cert.fp)
        for der in trust.issuer_certificates:
            self._add_trust_list_cert(der)
        self._crls_by_issuer: dict[NameKey, list[_Crl]] = {}
        for der in [*trust.trusted_crls, *trust.issuer_crls]:
            self._add_crl(der)
        # Signature results between trust-list objects never change, so they are kept; results that
        # involve peer-supplied certificates go to bounded caches.
        self._static_sig: dict[tuple[bytes, bytes], bool] = {}
        self._dynamic_sig: dict[tuple[bytes, bytes], bool] = {}
        self._peer_certs: dict[bytes, _Cert] = {}
        self._crl_sig: dict[tuple[int, bytes], bool] = {}
        self._dynamic_crl_sig: dict[tuple[int, bytes], bool] = {}
        for crls in self._crls_by_issuer.values():
            for crl in crls:
                for signer in self._by_subject.get(crl.issuer_key, ()):
                    self._crl_sig[(id(crl), signer.fp)] = self._check_crl_signature(crl, signer)

    # -- trust list loading --------------------------------------------------------------------------------

    def _add_trust_list_cert(self, der: bytes) -> _Cert | None:
        if der in self._by_der:
            return self._by_der[der]
        try:
            cert = _Cert(x509.load_der_x509_certificate(der), der)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            self.skipped.append(f"certificate {hashlib.sha256(der).hexdigest()[:16]}: {exc}")
            return None
        cert.in_trust_list = True
        self._by_der[der] = cert
        self._by_subject.setdefault(cert.subject_key, []).append(cert)
        return cert

    def _add_crl(self, der: bytes) -> None:
        try:
            crl = _Crl(x509.load_der_x509_crl(der))
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            self.skipped.append(f"CRL {hashlib.sha256(der).hexdigest()[:16]}: {exc}")
            return
        self._crls_by_issuer.setdefault(crl.issuer_key, []).append(crl)

    @staticmethod
    def _check_crl_signature(crl: _Crl, signer: _Cert) -> bool:
        parts = _signed_object_parts(crl.crl)
        return parts is not None and _verify_signature(signer.public_key, *parts)

    # -- public entry point --------------------------------------------------------------------------------

    def validate(self, chain: Sequence[bytes | x509.Certificate],
                 options: ValidationOptions | None = None) -> ValidationResult:
        """Validate `chain` (leaf first, then any intermediates the peer sent). Never raises on bad input."""
        options = options or _DEFAULT_OPTIONS
        try:
            return self._validate(chain, options)
        except Exception as exc:  # a validator on the connect path must answer, whatever the peer sent
            _log.exception("certificate validation failed unexpectedly")
            return _result(ValidationCode.CERTIFICATE_INVALID, f"certificate could not be processed: {exc}",
                           index=0)

    def _validate(self, chain: Sequence[bytes | x509.Certificate],
                  options: ValidationOptions) -> ValidationResult:
        if not chain:
            return _result(ValidationCode.CERTIFICATE_INVALID, "no certificate was presented", index=0)
        if len(chain) > _MAX_CHAIN:
            return _result(ValidationCode.CERTIFICATE_INVALID,
                           f"the chain has {len(chain)} certificates; at most {_MAX_CHAIN} are accepted",
                           index=_MAX_CHAIN)
        parsed: list[_Cert] = []
        for index, item in enumerate(chain):
            cert, error = self._load(item)
            if cert is None:
                what = "the certificate" if index == 0 else f"chain element {index}"
                return _result(ValidationCode.CERTIFICATE_INVALID,
                               f"{what} is not a valid DER certificate: {error}", index=index)
            parsed.append(cert)
        leaf = parsed[0]
        if leaf.problem is not None:
            return _result(ValidationCode.CERTIFICATE_INVALID, f"certificate {leaf.label} {leaf.problem}",
                           index=0, chain=[leaf.der])
        offered: dict[NameKey, list[_Cert]] = {}
        for cert in parsed[1:]:
            offered.setdefault(cert.subject_key, []).append(cert)
        ctx = _Context(options=options, at=_validation_time(options), offered=offered)
        outcome = self._best_outcome(leaf, ctx)
        return _outcome_result(outcome)

    def _load(self, item: bytes | x509.Certificate) -> tuple[_Cert | None, str]:
        try:
            if isinstance(item, x509.Certificate):
                der = item.public_bytes(_DER)
                obj: x509.Certificate | None = item
            else:
                der = bytes(item)
                obj = None
            known = self._by_der.get(der) or self._peer_certs.get(der)
            if known is not None:
                return known, ""
            cert = _Cert(obj if obj is not None else x509.load_der_x509_certificate(der), der)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            return None, str(exc)
        _remember(self._peer_certs, der, cert)
        return cert, ""

    # -- path building -------------------------------------------------------------------------------------

    def _best_outcome(self, leaf: _Cert, ctx: _Context) -> _Outcome:
        best: _Outcome | None = None
        for path, complete in islice(self._paths(leaf, ctx), _MAX_PATHS):
            outcome = self._evaluate(_PathState(path=path, complete=complete, ctx=ctx))
            if outcome.issue is None:
                return outcome
            if best is None or outcome.step > best.step:
                best = outcome
        assert best is not None  # _paths always yields at least the leaf on its own
        return best

    def _paths(self, leaf: _Cert, ctx: _Context) -> Iterator[tuple[list[_Cert], bool]]:
        """Candidate paths (leaf first) and whether each ends at a root, most promising first."""

        def walk(path: list[_Cert], seen: frozenset[bytes]) -> Iterator[tuple[list[_Cert], bool]]:
            last = path[-1]
            if last.self_issued and self._signed_by(last, last):
                yield path, True
                return
            extended = False
            if len(path) < _MAX_DEPTH:
                for issuer in self._issuer_candidates(last, ctx.offered):
                    if issuer.fp not in seen:
                        extended = True
                        yield from walk([*path, issuer], seen | {issuer.fp})
            if last.self_issued:
                yield path, True  # a root whose self-signature fails: step 3 reports it
            elif not extended:
                yield path, False

        return walk([leaf], frozenset({leaf.fp}))

    def _issuer_candidates(self, cert: _Cert, offered: Mapping[NameKey, list[_Cert]]) -> list[_Cert]:
        found: dict[bytes, _Cert] = {}
        for source in (self._by_subject.get(cert.issuer_key, ()), offered.get(cert.issuer_key, ())):
            for candidate in source:
                found.setdefault(candidate.fp, candidate)
        candidates = list(found.values())
        if len(candidates) > 1 and cert.aki is not None:
            # A matching key identifier is the strongest hint; a different one is the least likely issuer.
            candidates.sort(key=lambda c: 0 if c.ski == cert.aki else (1 if c.ski is None else 2))
        return candidates

    def _signed_by(self, child: _Cert, issuer: _Cert) -> bool:
        key = (child.fp, issuer.fp)
        static = child.in_trust_list and issuer.in_trust_list
        cache = self._static_sig if static else self._dynamic_sig
        result = cache.get(key)
        if result is None:
            result = _cert_signed_by(child, issuer)
            if static:
                cache[key] = result
            else:
                _remember(cache, key, result)
        return result

    # -- the Part 4 steps ----------------------------------------------------------------------------------

    def _evaluate(self, state: _PathState) -> _Outcome:
        suppressed: list[ValidationCode] = []
        options = state.ctx.options
        for step, check in self._steps:
            for issue in check(self, state):
                flag = _SUPPRESSIBLE.get(issue.code)
                if flag is not None and getattr(options, flag):
                    suppressed.append(issue.code)
                    continue
                return _Outcome(step=step, issue=issue, path=state.path, suppressed=suppressed)
        return _Outcome(step=_Step.PASSED, issue=None, path=state.path, suppressed=suppressed)

    def _check_structure(self, state: _PathState) -> Iterator[_Issue]:
        for index, cert in enumerate(state.path):
            if cert.problem is not None:
                yield _Issue(ValidationCode.CERTIFICATE_INVALID, index,
                             f"certificate {cert.label} {cert.problem}")
            elif cert.public_key is None:
                yield _Issue(ValidationCode.CERTIFICATE_INVALID, index,
                             f"certificate {cert.label} has a public key that cannot be used")

    def _check_chain(self, state: _PathState) -> Iterator[_Issue]:
        if not state.complete:
            last = state.path[-1]
            yield _Issue(ValidationCode.CHAIN_INCOMPLETE, len(state.path) - 1,
                         f"no issuer certificate {_describe(last.cert.issuer)} found for {last.label} "
                         f"in the chain or the trust list")

    def _check_signatures(self, state: _PathState) -> Iterator[_Issue]:
        path = state.path
        for index, cert in enumerate(path):
            issuer = path[index + 1] if index + 1 < len(path) else cert
            if not self._signed_by(cert, issuer):
                whose = "its own key" if issuer is cert else f"the key of {issuer.label}"
                yield _Issue(ValidationCode.CERTIFICATE_INVALID, index,
                             f"signature of {cert.label} does not verify with {whose}")

    def _check_policy(self, state: _PathState) -> Iterator[_Issue]:
        options = state.ctx.options
        leaf = state.path[0]
        if options.min_rsa_bits is not None or options.max_rsa_bits is not None:
            key = leaf.public_key
            if isinstance(key, rsa.RSAPublicKey):
                bits = key.key_size
                if options.min_rsa_bits is not None and bits < options.min_rsa_bits:
                    yield _Issue(ValidationCode.POLICY_CHECK_FAILED, 0,
                                 f"{leaf.label} has a {bits}-bit RSA key; the security policy needs at "
                                 f"least {options.min_rsa_bits} bits")
                if options.max_rsa_bits is not None and bits > options.max_rsa_bits:
                    yield _Issue(ValidationCode.POLICY_CHECK_FAILED, 0,
                                 f"{leaf.label} has a {bits}-bit RSA key; the security policy allows at "
                                 f"most {options.max_rsa_bits} bits")
        if options.reject_weak_hashes:
            last = len(state.path) - 1
            for index, cert in enumerate(state.path):
                if index == last and cert.self_issued:
                    continue  # a root's self-signature protects nothing: the root is trusted as it is
                name = _hash_name(cert.cert)
                if name in _WEAK_HASHES:
                    yield _Issue(ValidationCode.POLICY_CHECK_FAILED, index,
                                 f"{cert.label} is signed with {name.upper()}, "
                                 f"which the security policy rejects")

    def _check_trust(self, state: _PathState) -> Iterator[_Issue]:
        required_root = state.ctx.required_root
        if required_root is not None and state.path[-1].fp != required_root:
            yield _Issue(ValidationCode.UNTRUSTED, 0,
                         f"{state.path[0].label} does not chain to the same trust anchor as the certificate "
                         f"whose CRL it signed")
        elif not any(cert.fp in self._trusted for cert in state.path):
            yield _Issue(ValidationCode.UNTRUSTED, 0,
                         f"neither {state.path[0].label} nor any CA in its chain is in the trusted "
                         f"certificates")

    def _check_validity(self, state: _PathState) -> Iterator[_Issue]:
        at = state.ctx.at
        for index, cert in enumerate(state.path):
            not_before, not_after = cert.cert.not_valid_before_utc, cert.cert.not_valid_after_utc
            if not_before <= at <= not_after:
                continue
            code = ValidationCode.TIME_INVALID if index == 0 else ValidationCode.ISSUER_TIME_INVALID
            when = f"expired on {not_after:%Y-%m-%d %H:%M:%S}Z" if at > not_after \
                else f"is not valid before {not_before:%Y-%m-%d %H:%M:%S}Z"
            yield _Issue(code, index, f"{'certificate' if index == 0 else 'issuer'} {cert.label} {when}")

    def _check_host_name(self, state: _PathState) -> Iterator[_Issue]:
        hostname = state.ctx.options.hostname
        leaf = state.path[0]
        if hostname is not None and not _host_matches(leaf.san, hostname):
            yield _Issue(ValidationCode.HOST_NAME_INVALID, 0,
                         f"{leaf.label} has no subjectAltName dNSName or iPAddress matching {hostname!r}")

    def _check_uri(self, state: _PathState) -> Iterator[_Issue]:
        uri = state.ctx.options.application_uri
        leaf = state.path[0]
        if uri is None:
            return
        uris = leaf.san.get_values_for_type(x509.UniformResourceIdentifier) if leaf.san is not None else []
        if uri not in uris:
            found = ", ".join(uris) or "none"
            yield _Issue(ValidationCode.URI_INVALID, 0,
                         f"{leaf.label} has subjectAltName URI {found}, not the ApplicationUri {uri!r}")

    def _check_usage(self, state: _PathState) -> Iterator[_Issue]:
        yield from self._check_leaf_usage(state)
        path = state.path
        for index in range(1, len(path)):
            cert = path[index]
            if not cert.is_ca:
                yield _Issue(ValidationCode.ISSUER_USE_NOT_ALLOWED, index,
                             f"issuer {cert.label} is not a CA (basicConstraints cA is missing or false)")
            elif cert.key_usage is not None and not cert.key_usage.key_cert_sign:
                yield _Issue(ValidationCode.ISSUER_USE_NOT_ALLOWED, index,
                             f"issuer {cert.label} has a keyUsage without keyCertSign")
        yield from _check_path_length(path)

    def _check_leaf_usage(self, state: _PathState) -> Iterator[_Issue]:
        options = state.ctx.options
        leaf = state.path[0]
        if options.opcua_application:
            missing = _missing_key_usages(leaf)
            if missing:
                yield _Issue(ValidationCode.USE_NOT_ALLOWED, 0,
                             f"{leaf.label} keyUsage lacks {', '.join(missing)} (required by OPC UA Part 6)")
        if options.required_eku is not None:
            oid = _EKU_OIDS[options.required_eku]
            if leaf.eku is None or oid not in leaf.eku:
                yield _Issue(ValidationCode.USE_NOT_ALLOWED, 0,
                             f"{leaf.label} extendedKeyUsage does not include {options.required_eku}")

    def _check_revocation_found(self, state: _PathState) -> Iterator[_Issue]:
        for index, status, reason in self._revocation(state):
            if status is RevocationStatus.UNKNOWN:
                code = (ValidationCode.REVOCATION_UNKNOWN if index == 0
                        else ValidationCode.ISSUER_REVOCATION_UNKNOWN)
                yield _Issue(code, index, reason)

    def _check_revoked(self, state: _PathState) -> Iterator[_Issue]:
        for index, status, reason in self._revocation(state):
            if status is RevocationStatus.REVOKED:
                code = ValidationCode.REVOKED if index == 0 else ValidationCode.ISSUER_REVOKED
                yield _Issue(code, index, reason)

    _steps: tuple[tuple[_Step, Callable[[CertificateValidator, _PathState], Iterator[_Issue]]], ...] = (
        (_Step.STRUCTURE, _check_structure),
        (_Step.CHAIN, _check_chain),
        (_Step.SIGNATURE, _check_signatures),
        (_Step.POLICY, _check_policy),
        (_Step.TRUST, _check_trust),
        (_Step.VALIDITY, _check_validity),
        (_Step.HOST_NAME, _check_host_name),
        (_Step.URI, _check_uri),
        (_Step.USAGE, _check_usage),
        (_Step.FIND_REVOCATION, _check_revocation_found),
        (_Step.REVOCATION, _check_revoked),
    )

    # -- revocation ----------------------------------------------------------------------------------------

    def _revocation(self, state: _PathState) -> list[tuple[int, RevocationStatus, str]]:
        """Status of every certificate that has an issuer in the path (computed once for steps 10 and 11)."""
        if state.revocation is None:
            path = state.path
            statuses = []
            for index in range(len(path) - 1):
                status, reason = self._status(path[index], path[index + 1], path[-1], state.ctx)
                statuses.append((index, status, reason))
            state.revocation = statuses
        return state.revocation

    def _status(self, cert: _Cert, issuer: _Cert, root: _Cert, ctx: _Context) -> tuple[RevocationStatus, str]:
        if self._revocation_source is not None:
            try:
                answer = self._revocation_source.status(cert.cert, issuer.cert)
            except Exception:  # an outage of the source must not turn into "certificate invalid"
                _log.warning("revocation source failed for %s; using CRLs", cert.label, exc_info=True)
                answer = None
            if answer is not None:
                return answer, _source_reason(cert, issuer, answer)
        return self._crl_status(cert, issuer, root, ctx)

    def _crl_status(self, cert: _Cert, issuer: _Cert, root: _Cert,
                    ctx: _Context) -> tuple[RevocationStatus, str]:
        crls = self._crls_by_issuer.get(issuer.subject_key)
        if not crls:
            return RevocationStatus.UNKNOWN, f"no CRL of {issuer.label} (issuer of {cert.label}) is available"
        notes: list[str] = []
        current = [crl for crl in crls if self._crl_is_current(crl, cert, ctx.at, notes)]
        usable = [crl for crl in current if self._crl_from_issuer(crl, issuer, notes)]
        if not usable and current:
            usable = [crl for crl in current
                      if self._crl_from_separate_signer(crl, cert, issuer, root, ctx, notes)]
        if not usable:
            detail = "; ".join(dict.fromkeys(notes)) or "none applies"
            return (RevocationStatus.UNKNOWN,
                    f"revocation status of {cert.label} is unknown: no usable CRL of {issuer.label} "
                    f"({detail})")
        crl = max(usable, key=lambda c: (c.this_update, c.number))
        if cert.cert.serial_number in crl.revoked:
            return (RevocationStatus.REVOKED,
                    f"{cert.label} (serial {cert.cert.serial_number:x}) is revoked by {crl.label()}")
        return RevocationStatus.GOOD, ""

    @staticmethod
    def _crl_is_current(crl: _Crl, cert: _Cert, at: datetime, notes: list[str]) -> bool:
        if crl.problem is not None:
            notes.append(f"{crl.label()} {crl.problem}")
            return False
        if not crl.covers(cert):
            notes.append(f"{crl.label()} does not cover this certificate (issuingDistributionPoint)")
            return False
        if crl.this_update > at:
            notes.append(f"{crl.label()} is not yet valid")
            return False
        if crl.next_update is not None and crl.next_update < at:
            notes.append(f"{crl.label()} expired on {crl.next_update:%Y-%m-%d %H:%M}Z")
            return False
        return True

    def _crl_from_issuer(self, crl: _Crl, issuer: _Cert, notes: list[str]) -> bool:
        if not self._crl_signed_by(crl, issuer):
            notes.append(f"{crl.label()} is not signed by the key of {issuer.label}")
            return False
        if not issuer.may_sign_crls:
            notes.append(f"{issuer.label} keyUsage does not allow cRLSign")
            return False
        return True

    def _crl_from_separate_signer(self, crl: _Crl, cert: _Cert, issuer: _Cert, root: _Cert, ctx: _Context,
                                  notes: list[str]) -> bool:
        """RFC 5280 allows a CA to sign CRLs with another key certified under the same name and anchor."""
        if ctx.depth >= _MAX_SIGNER_DEPTH:
            return False
        for signer in self._by_subject.get(issuer.subject_key, ()):
            if signer is issuer or signer is cert or not signer.may_sign_crls:
                continue
            if not self._crl_signed_by(crl, signer):
                continue
            sub_ctx = _Context(options=_signer_options(ctx.options), at=ctx.at, offered=ctx.offered,
                               depth=ctx.depth + 1, required_root=root.fp)
            outcome = self._best_outcome(signer, sub_ctx)
            if outcome.issue is None:
                return True
            notes.append(f"CRL signer {signer.label} is not valid: {outcome.issue.reason}")
        return False

    def _crl_signed_by(self, crl: _Crl, signer: _Cert) -> bool:
        key = (id(crl), signer.fp)
        result = self._crl_sig.get(key)
        if result is None:
            result = self._dynamic_crl_sig.get(key)
            if result is None:
                result = self._check_crl_signature(crl, signer)
                _remember(self._dynamic_crl_sig, key, result)
        return result


# ---------------------------------------------------------------------------------------------------------
# Helpers

_K = TypeVar("_K")
_V = TypeVar("_V")


def _remember(cache: dict[_K, _V], key: _K, value: _V) -> None:
    # Dropping everything when full keeps the cache bounded without a lock; it refills in a few calls.
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value


def _validation_time(options: ValidationOptions) -> datetime:
    if options.at is None:
        return datetime.now(UTC)
    if options.at.tzinfo is None:
        return options.at.replace(tzinfo=UTC)
    return options.at


def _signer_options(options: ValidationOptions) -> ValidationOptions:
    # A CRL signer is checked as a CA-issued certificate, not as the peer application.
    return options.model_copy(update={
        "application_uri": None, "hostname": None, "required_eku": None, "opcua_application": False,
        "min_rsa_bits": None, "max_rsa_bits": None,
    })


def _hash_name(cert: x509.Certificate) -> str | None:
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return None
    return algorithm.name if algorithm is not None else None


def _missing_key_usages(leaf: _Cert) -> list[str]:
    usage = leaf.key_usage
    if usage is None:
        return ["the keyUsage extension"]
    required = {"digital_signature": "digitalSignature"}
    if isinstance(leaf.public_key, rsa.RSAPublicKey):
        required |= {"key_encipherment": "keyEncipherment", "data_encipherment": "dataEncipherment"}
    return [label for attr, label in required.items() if not getattr(usage, attr)]


def _check_path_length(path: list[_Cert]) -> Iterator[_Issue]:
    """RFC 5280 §6.1.4 (l)/(m): walk from the root down; self-issued certificates do not count."""
    remaining: int | None = None
    limited_by: _Cert | None = None
    last = len(path) - 1
    for index in range(last, 0, -1):
        cert = path[index]
        if index < last and not cert.self_issued and remaining is not None:
            if remaining <= 0:
                assert limited_by is not None
                yield _Issue(ValidationCode.ISSUER_USE_NOT_ALLOWED, index,
                             f"issuer {cert.label} exceeds the pathLenConstraint of {limited_by.label}")
                return
            remaining -= 1
        path_length = cert.basic.path_length if cert.basic is not None else None
        if path_length is not None and (remaining is None or path_length < remaining):
            remaining, limited_by = path_length, cert


def _host_matches(san: x509.SubjectAlternativeName | None, hostname: str) -> bool:
    if san is None:
        return False
    try:
        address = ipaddress.ip_address(hostname.strip("[]"))
    except ValueError:
        address = None
    if address is not None:
        return address in san.get_values_for_type(x509.IPAddress)
    wanted = hostname.rstrip(".").lower()
    for name in san.get_values_for_type(x509.DNSName):
        pattern = name.rstrip(".").lower()
        if pattern == wanted:
            return True
        # RFC 6125 §6.4.3: a wildcard stands for exactly one whole left-most label.
        if pattern.startswith("*.") and "." in wanted and wanted.split(".", 1)[1] == pattern[2:]:
            return True
    return False


def _source_reason(cert: _Cert, issuer: _Cert, status: RevocationStatus) -> str:
    if status is RevocationStatus.REVOKED:
        return f"{cert.label} (serial {cert.cert.serial_number:x}) is revoked (revocation source)"
    if status is RevocationStatus.UNKNOWN:
        return f"revocation status of {cert.label} is unknown to the revocation source for {issuer.label}"
    return ""


def _result(code: ValidationCode, reason: str, *, index: int | None = None, chain: list[bytes] | None = None,
            suppressed: list[ValidationCode] | None = None) -> ValidationResult:
    return ValidationResult(code=code, reason=reason, failed_index=index, chain=chain or [],
                            suppressed=suppressed or [])


def _outcome_result(outcome: _Outcome) -> ValidationResult:
    chain = [cert.der for cert in outcome.path]
    suppressed = list(dict.fromkeys(outcome.suppressed))
    if outcome.issue is None:
        reason = f"certificate {outcome.path[0].label} is valid"
        if suppressed:
            reason += " (suppressed: " + ", ".join(code.value for code in suppressed) + ")"
        return _result(ValidationCode.GOOD, reason, chain=chain, suppressed=suppressed)
    issue = outcome.issue
    return _result(issue.code, issue.reason, index=issue.index, chain=chain, suppressed=suppressed)
