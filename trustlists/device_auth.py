"""Who a presented client-certificate chain is: the protocol-free half of device authentication, shared by every
front that admits devices by TLS client certificate (the MQTT brokers and enrollment service through
`mqtt_broker_auth.decision.DeviceGate`, EST through `http_fronts.est`).

`DeviceAuthenticator.authenticate` turns a chain (leaf first, DER) into an `AuthenticatedDevice` or a `Refusal`
with a machine-readable reason; `still_valid` is the O(1) question a front asks about a live session.

Two kinds of identity:
- operational: the chain anchors at one of the engine's own CAs of the group; the certificate names a
  registered device (CN, or the last segment of the SAN URI, per `identity_source`) and carries exactly the
  SAN URI the engine would put in it for that device;
- bootstrap: the chain anchors at an external CA imported into the group's trust list (a manufacturer's
  IDevID CA), or it is a factory self-signed certificate allow-listed by fingerprint. It is admitted only if
  a registered device lists it in `attributes["bootstrap"]` and the device is not pinned to another bootstrap
  certificate (`trustlists.bootstrap`).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ConfigDict

from trustlists.csr_checks import expected_uri
from trustlists.errors import BootstrapRefused
from trustlists.models import Owner, OwnerRole
from trustlists.validation import CertificateValidator, ValidationCode, ValidationOptions, ValidationResult

if TYPE_CHECKING:
    from trustlists.engine import Engine

__all__ = ["AuthenticatedDevice", "DeviceAuthenticator", "IdentitySource", "Kind", "Refusal", "RefusalReason"]

_log = logging.getLogger(__name__)

RefusalReason = Literal[
    "no_certificate",  # nothing presented
    "unparseable",  # the leaf or a chain element is not a DER certificate
    "invalid_certificate",  # bad signature, malformed extension, weak policy
    "untrusted",  # does not chain to the group's trust list
    "expired",  # leaf or an issuer past notAfter
    "not_yet_valid",
    "revoked",  # leaf or any CA in the chain
    "revocation_unknown",  # an external CA in the chain whose revocation status cannot be determined
    "wrong_usage",  # no clientAuth EKU, or an issuer that may not sign certificates
    "unknown_device",  # the name in the certificate is not a registered device of the group
    "unregistered",  # the device was registered but its registration has ended
    "identity_mismatch",  # CN / SAN URI do not match the registration, or the name is unusable in a topic
    "client_id_mismatch",  # (MQTT) the client id is not the identity
    "bootstrap_not_allowed",  # an external or self-signed certificate no registered device lists
    "bootstrap_pinned",  # the device enrolled with another bootstrap certificate (until an operator re-arms it)
    "will_topic_denied",  # (broker) the CONNECT's will topic is not one the identity may publish to
    "unknown_certificate",  # (broker) chains to an engine CA, but the engine's inventory has no such certificate
    # (broker) an operational identity other than the enrollment service, on a bootstrap listener
    "not_on_bootstrap_listener",
]

Kind = Literal["operational", "bootstrap"]
IdentitySource = Literal["cn", "san_uri"]

_CODE_REASONS: dict[ValidationCode, RefusalReason] = {
    ValidationCode.CERTIFICATE_INVALID: "invalid_certificate",
    ValidationCode.POLICY_CHECK_FAILED: "invalid_certificate",
    ValidationCode.HOST_NAME_INVALID: "invalid_certificate",
    ValidationCode.URI_INVALID: "invalid_certificate",
    ValidationCode.CHAIN_INCOMPLETE: "untrusted",
    ValidationCode.UNTRUSTED: "untrusted",
    ValidationCode.ISSUER_TIME_INVALID: "expired",
    ValidationCode.USE_NOT_ALLOWED: "wrong_usage",
    ValidationCode.ISSUER_USE_NOT_ALLOWED: "wrong_usage",
    ValidationCode.REVOCATION_UNKNOWN: "revocation_unknown",
    ValidationCode.ISSUER_REVOCATION_UNKNOWN: "revocation_unknown",
    ValidationCode.REVOKED: "revoked",
    ValidationCode.ISSUER_REVOKED: "revoked",
}
# Codes a chain outside the engine may fail on and still be a usable bootstrap identity: manufacturers rarely
# publish CRLs, and IDevIDs often carry no extendedKeyUsage at all.
_BOOTSTRAP_RETRY = frozenset({ValidationCode.REVOCATION_UNKNOWN, ValidationCode.ISSUER_REVOCATION_UNKNOWN,
                              ValidationCode.USE_NOT_ALLOWED})


class AuthenticatedDevice(BaseModel):
    """The registered device a chain proved, and the certificate that proved it."""

    model_config = ConfigDict(frozen=True)

    owner: Owner
    group: str
    serial: int
    issuer_ca_id: str | None  # the engine CA that issued the leaf (None for bootstrap certificates)
    kind: Kind
    role: OwnerRole | None  # the owner's typed role; never set for a bootstrap certificate
    not_after: datetime  # the earliest notAfter on the path
    fingerprint: str  # SHA-256 hex of the leaf


class Refusal(BaseModel):
    model_config = ConfigDict(frozen=True)

    reason: RefusalReason
    detail: str


_FACTS_CACHE_LIMIT = 4096


@dataclass(frozen=True)
class _CertFacts:
    cert: x509.Certificate
    fingerprint: str  # SHA-256 hex
    cn: str | None
    uris: list[str]
    not_after: datetime
    issuer: bytes  # the issuer's name, DER


class _CaLink(BaseModel):
    """What `still_valid` needs of an engine CA, cached: CA records never change except by revocation."""

    model_config = ConfigDict(frozen=True)

    parent_id: str | None
    serial: int
    not_after: datetime


class DeviceAuthenticator:
    """authenticate / still_valid for one device group, answered from one engine."""

    def __init__(self, engine: Engine, group: str, *, identity_source: IdentitySource = "cn",
                 validator_ttl: float = 1.0) -> None:
        self._engine = engine
        self.group = group
        self.identity_source = identity_source
        self._group_policy = engine.config.group(group)
        self._lock = threading.Lock()
        self.validator_ttl = validator_ttl
        self._validator: CertificateValidator | None = None
        self._validator_at = 0.0
        self._facts_cache: dict[bytes, _CertFacts] = {}
        self._engine_cas: dict[bytes, str] = {}  # fingerprint -> CA id, all engine CAs
        self._engine_names: frozenset[bytes] = frozenset()  # subject names (DER) of all engine CAs
        self._ca_links: dict[str, _CaLink] = {}
        self._group_cas: set[str] = set()
        self._reload_cas()

    # -- authenticate -------------------------------------------------------------------------------------------

    def authenticate(self, chain: Sequence[bytes]) -> AuthenticatedDevice | Refusal:
        """Validate `chain` (leaf first) and map it to a registered device; never raises on bad input."""
        try:
            return self._authenticate(list(chain))
        except Exception as exc:  # the connect path must answer, whatever the peer sent
            _log.exception("authentication failed unexpectedly")
            return Refusal(reason="invalid_certificate", detail=f"certificate could not be processed: {exc}")

    def _authenticate(self, chain: list[bytes]) -> AuthenticatedDevice | Refusal:
        if not chain or not chain[0]:
            return Refusal(reason="no_certificate", detail="no client certificate was presented")
        try:
            facts = self._facts(bytes(chain[0]))
        except ValueError as exc:
            return Refusal(reason="unparseable", detail=f"the certificate is not a valid DER certificate: {exc}")
        leaf = facts.cert
        now = self._now()
        fingerprint = facts.fingerprint
        if leaf.issuer == leaf.subject:
            factory = self._factory_certificate(leaf, fingerprint, now)
            if factory is not None:
                return factory
        validator = self._current_validator()
        relaxed = ValidationOptions(at=now, required_eku=self._bootstrap_eku(leaf),
                                    suppress_revocation_status_unknown=True,
                                    suppress_issuer_revocation_status_unknown=True)
        if facts.issuer not in self._engine_names:
            # No engine CA bears the leaf's issuer name, so no path can run through one (paths are built by
            # name): an outside chain, judged by the bootstrap rules at once. The strict pass below would only
            # fail on what they relax (a validation saved per IDevID connect).
            result = validator.validate(chain, relaxed)
            engine_ca = self._engine_issuer(result)
        else:
            result = validator.validate(chain, ValidationOptions(at=now, required_eku="clientAuth"))
            engine_ca = self._engine_issuer(result)
            if not result.ok and engine_ca is None and result.code in _BOOTSTRAP_RETRY:
                result = validator.validate(chain, relaxed)
                engine_ca = self._engine_issuer(result)
        if not result.ok:
            return self._refusal(result, leaf, now)
        if engine_ca is None and any(hashlib.sha256(der).digest() in self._engine_cas for der in result.chain[1:]):
            # Issued by the engine, but not by this group's issuing CA: never a bootstrap identity.
            return Refusal(reason="untrusted", detail=f"the certificate was not issued by a CA of {self.group}")
        not_after = min(self._facts(der).not_after for der in result.chain)
        if engine_ca is not None:
            return self._operational(facts, engine_ca, not_after)
        return self._bootstrap(facts, not_after)

    def _operational(self, facts: _CertFacts, ca_id: str, not_after: datetime) -> AuthenticatedDevice | Refusal:
        name = self._identity_name(facts)
        if name is None:
            return Refusal(reason="identity_mismatch",
                           detail=f"the certificate has no {self.identity_source} to take the identity from")
        owner = self._engine.registry.find(self.group, name=name)
        if owner is None:
            return Refusal(reason="unknown_device", detail=f"{name!r} is not a registered device of {self.group}")
        if owner.unregistered:
            return Refusal(reason="unregistered", detail=f"the registration of {name!r} has ended")
        # The identity must agree with everything else the engine put in the certificate: a certificate of
        # another device, or one whose CN and URI disagree, names nobody.
        cn = facts.cn
        if cn != owner.name:
            return Refusal(reason="identity_mismatch", detail=f"CN {cn!r} is not the registered name {owner.name!r}")
        want_uri = expected_uri(self._group_policy, self.group, owner)
        uris = facts.uris
        if want_uri is not None and uris != [want_uri]:
            return Refusal(reason="identity_mismatch",
                           detail=f"SAN URI {', '.join(uris) or 'none'} is not {want_uri!r} of {owner.name!r}")
        return self._identity(owner, kind="operational", serial=facts.cert.serial_number, ca_id=ca_id,
                              not_after=not_after, fingerprint=facts.fingerprint)

    def _bootstrap(self, facts: _CertFacts, not_after: datetime) -> AuthenticatedDevice | Refusal:
        owner = self._bootstrap_owner(facts.cn, facts.fingerprint)
        if isinstance(owner, Refusal):
            return owner
        return self._identity(owner, kind="bootstrap", serial=facts.cert.serial_number, ca_id=None,
                              not_after=not_after, fingerprint=facts.fingerprint)

    def _factory_certificate(self, leaf: x509.Certificate, fingerprint: str,
                             now: datetime) -> AuthenticatedDevice | Refusal | None:
        """A self-signed factory certificate allow-listed by its exact fingerprint (no CA involved).

        None when no device lists this fingerprint: then the chain goes through normal validation (it may be
        imported into the trust list, or be an attack).
        """
        owner = self._bootstrap_owner(None, fingerprint, fingerprint_only=True)
        if isinstance(owner, Refusal):
            return owner if owner.reason == "bootstrap_pinned" else None
        try:
            leaf.verify_directly_issued_by(leaf)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            return Refusal(reason="invalid_certificate", detail="the self-signature of the factory certificate "
                           "does not verify")
        if now < leaf.not_valid_before_utc:
            return Refusal(reason="not_yet_valid", detail=f"the factory certificate is not valid before "
                           f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S}Z")
        if now > leaf.not_valid_after_utc:
            return Refusal(reason="expired", detail=f"the factory certificate expired on "
                           f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z")
        return self._identity(owner, kind="bootstrap", serial=leaf.serial_number, ca_id=None,
                              not_after=leaf.not_valid_after_utc, fingerprint=fingerprint)

    def _bootstrap_owner(self, subject_cn: str | None, fingerprint: str, *,
                         fingerprint_only: bool = False) -> Owner | Refusal:
        """The device that allow-lists this certificate, if it is not pinned to another one."""
        bootstrap = self._engine.bootstrap
        try:
            owner = bootstrap.find_owner(self.group, subject_cn=subject_cn, fingerprint=fingerprint,
                                         fingerprint_only=fingerprint_only)
        except BootstrapRefused as exc:
            return Refusal(reason="bootstrap_not_allowed", detail=exc.message)
        try:
            bootstrap.check_pin(owner, fingerprint)
        except BootstrapRefused as exc:
            return Refusal(reason="bootstrap_pinned", detail=exc.message)
        return owner

    def _identity(self, owner: Owner, *, kind: Kind, serial: int, ca_id: str | None, not_after: datetime,
                  fingerprint: str) -> AuthenticatedDevice:
        # A bootstrap certificate never carries the service's rights.
        role = owner.role if kind == "operational" else None
        return AuthenticatedDevice(owner=owner, group=self.group, serial=serial, issuer_ca_id=ca_id, kind=kind,
                                   role=role, not_after=not_after, fingerprint=fingerprint)

    def _identity_name(self, facts: _CertFacts) -> str | None:
        if self.identity_source == "cn":
            return facts.cn
        uris = facts.uris
        if len(uris) != 1:
            return None
        last = uris[0].rstrip("/").replace(":", "/").rsplit("/", 1)[-1]
        return last or None

    def _engine_issuer(self, result: ValidationResult) -> str | None:
        """The engine CA of this group that issued the leaf on the built path, or None for outside chains."""
        if len(result.chain) < 2:
            return None
        ca_id = self._engine_cas.get(hashlib.sha256(result.chain[1]).digest())
        return ca_id if ca_id in self._group_cas else None

    @staticmethod
    def _bootstrap_eku(leaf: x509.Certificate) -> Literal["clientAuth"] | None:
        try:
            leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        except x509.ExtensionNotFound:
            return None  # an IDevID without EKU may be used for any purpose (RFC 5280 4.2.1.12)
        return "clientAuth"

    def _refusal(self, result: ValidationResult, leaf: x509.Certificate, now: datetime) -> Refusal:
        if result.code is ValidationCode.TIME_INVALID:
            reason: RefusalReason = "not_yet_valid" if now < leaf.not_valid_before_utc else "expired"
        elif result.code is ValidationCode.CERTIFICATE_INVALID and "not a valid DER" in result.reason:
            reason = "unparseable"
        else:
            reason = _CODE_REASONS.get(result.code, "invalid_certificate")
        if reason == "untrusted":
            revoked_ca = self._revoked_engine_issuer(leaf, result)
            if revoked_ca is not None:
                # A revoked CA leaves the trust list, so the validator only sees "untrusted"; say why.
                return Refusal(reason="revoked", detail=f"the issuing CA {revoked_ca} of this certificate is revoked")
        return Refusal(reason=reason, detail=f"{result.code.value}: {result.reason}")

    def _revoked_engine_issuer(self, leaf: x509.Certificate, result: ValidationResult) -> str | None:
        try:
            aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        except (x509.ExtensionNotFound, ValueError):
            aki = None
        fingerprints = {hashlib.sha256(der).digest() for der in result.chain[1:]}
        for status in self._engine.ca_statuses():
            ca = status.record
            if ca.group != self.group or not status.revoked:
                continue
            if bytes.fromhex(ca.fingerprint_sha256) in fingerprints or (aki is not None
                                                                        and aki == _ski(ca.certificate_der)):
                return ca.name
        return None

    # -- live sessions ------------------------------------------------------------------------------------------

    def still_valid(self, *, kind: Kind, owner_id: str, fingerprint: str, issuer_ca_id: str | None, serial: int,
                    not_after: datetime, at: datetime | None = None) -> bool:
        """Not expired, neither the leaf nor any engine CA above it revoked, and a bootstrap certificate not
        displaced by its device's pin: dict lookups only."""
        now = at or self._now()
        if now > not_after:
            return False
        if kind == "bootstrap":
            # Another certificate with the same allow-listed CN, admitted before the device enrolled, must not
            # stay admitted (a server-generated key may be delivered to it).
            return self._engine.bootstrap.admits_live(owner_id, fingerprint)
        is_revoked = self._engine.is_revoked
        ca_id = issuer_ca_id
        while ca_id is not None:
            if is_revoked(ca_id, serial):
                return False
            link = self._ca_links.get(ca_id)
            if link is None:
                self._reload_cas()
                link = self._ca_links.get(ca_id)
                if link is None:
                    return False  # a CA the engine no longer knows: fail closed
            ca_id, serial = link.parent_id, link.serial
        return True

    # -- helpers ------------------------------------------------------------------------------------------------

    def _facts(self, der: bytes) -> _CertFacts:
        """Parsed facts of a certificate, cached by its DER (raises ValueError for garbage).

        Devices reconnect with the same certificate over and over; reading its name and SAN again each time
        cost more than the chain validation itself. Facts never change for given bytes, so caching is safe.
        """
        facts = self._facts_cache.get(der)
        if facts is None:
            cert = x509.load_der_x509_certificate(der)
            facts = _CertFacts(cert=cert, fingerprint=hashlib.sha256(der).hexdigest(), cn=_common_name(cert),
                               uris=_san_uris(cert), not_after=cert.not_valid_after_utc,
                               issuer=cert.issuer.public_bytes())
            if len(self._facts_cache) >= _FACTS_CACHE_LIMIT:
                self._facts_cache.clear()  # bounded without bookkeeping; refills on the next connects
            self._facts_cache[der] = facts
        return facts

    def _current_validator(self) -> CertificateValidator:
        # engine.validator() reads the trust list from the store on every call (~60 µs, a third of a connect's
        # decision). Revocation does not need that read: the validator answers it from the live index, for the
        # leaf and every engine CA, whatever trust-list version it was built from. So the validator is reused
        # for `validator_ttl` seconds; only trust-list *content* changes (an imported CA, a removed one) wait.
        now = time.monotonic()
        if self._validator is None or now - self._validator_at >= self.validator_ttl:
            validator = self._engine.validator(self.group)
            if validator is not self._validator:
                self._reload_cas()  # a new trust list may mean new CAs (rollover, initialize)
            self._validator, self._validator_at = validator, now
        return self._validator

    def _reload_cas(self) -> None:
        with self._lock:
            cas = self._engine.hierarchy.list()
            self._engine_cas = {bytes.fromhex(ca.fingerprint_sha256): ca.id for ca in cas}
            self._engine_names = frozenset(x509.load_der_x509_certificate(ca.certificate_der).subject.public_bytes()
                                           for ca in cas)
            # Only the group's own issuing CAs make an operational identity; every engine CA is a link upwards.
            self._ca_links = {ca.id: _CaLink(parent_id=ca.parent_id, serial=int(ca.serial, 16),
                                             not_after=ca.not_after) for ca in cas}
            self._group_cas = {ca.id for ca in cas if ca.group == self.group}

    def _now(self) -> datetime:
        return self._engine.now()


def _common_name(cert: x509.Certificate) -> str | None:
    try:
        attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return None
    if len(attrs) != 1:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else None


def _ski(der: bytes) -> bytes | None:
    try:
        cert = x509.load_der_x509_certificate(der)
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except (x509.ExtensionNotFound, ValueError):
        return None


def _san_uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)
