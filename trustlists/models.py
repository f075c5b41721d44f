"""Pydantic models shared by the engine and everyone who talks to it."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trustlists.clock import from_epoch

# Defined without pydantic for the CLI (trustlists.enums); exported here with the other engine types.
from trustlists.enums import CertificateStatus as CertificateStatus
from trustlists.enums import KeyFamily as KeyFamily
from trustlists.enums import KeyType as KeyType
from trustlists.enums import RequestStatus as RequestStatus


class OwnerKind(StrEnum):
    APPLICATION = "application"
    DEVICE = "device"
    USER = "user"


class OwnerRole(StrEnum):
    """What an owner is to the services, beyond holding certificates (stored as `attributes["role"]`).

    A role is checked when a registration enters (`Registry.register`/`update`): an unknown value is refused
    there, so a front reading `Owner.role` never sees free-form text.
    """

    ENROLLMENT_SERVICE = "enrollment-service"  # the MQTT enrollment service's own identity


ROLE_ATTRIBUTE = "role"
# Where `Owner.unregistered_at` is kept in the store: inside the attributes JSON, as an ISO 8601 string (the shape
# data directories written before the field existed already hold).
UNREGISTERED_ATTRIBUTE = "unregistered_at"
# Attribute keys only the engine writes; a registration or update that brings one is refused.
RESERVED_ATTRIBUTES = frozenset({UNREGISTERED_ATTRIBUTE})


class RevocationReason(IntEnum):
    """RFC 5280 CRLReason values."""

    UNSPECIFIED = 0
    KEY_COMPROMISE = 1
    CA_COMPROMISE = 2
    AFFILIATION_CHANGED = 3
    SUPERSEDED = 4
    CESSATION_OF_OPERATION = 5
    CERTIFICATE_HOLD = 6
    PRIVILEGE_WITHDRAWN = 9
    AA_COMPROMISE = 10

    @classmethod
    def parse(cls, text: str) -> RevocationReason:
        key = text.strip().replace("-", "_").upper()
        aliases = {"KEYCOMPROMISE": "KEY_COMPROMISE", "CACOMPROMISE": "CA_COMPROMISE",
                   "AFFILIATIONCHANGED": "AFFILIATION_CHANGED",
                   "CESSATIONOFOPERATION": "CESSATION_OF_OPERATION",
                   "CERTIFICATEHOLD": "CERTIFICATE_HOLD", "PRIVILEGEWITHDRAWN": "PRIVILEGE_WITHDRAWN",
                   "AACOMPROMISE": "AA_COMPROMISE"}
        key = aliases.get(key.replace("_", ""), key)
        try:
            return cls[key]
        except KeyError:
            names = ", ".join(m.name.lower().replace("_", "-") for m in cls)
            raise ValueError(f"unknown revocation reason {text!r}; use one of: {names}") from None


class IssuanceKind(StrEnum):
    CSR = "csr"
    SERVER_KEYGEN = "server-keygen"
    RENEWAL = "renewal"
    BATCH = "batch"
    OCSP_SIGNER = "ocsp-signer"  # a CA's delegated OCSP signing certificate (trustlists/ocsp_signer.py)


class Owner(BaseModel):
    """An application, device or user that certificates are issued to (the registration)."""

    model_config = ConfigDict(frozen=True)

    id: str
    kind: OwnerKind
    name: str
    group: str
    site: str | None = None
    application_uri: str | None = None
    dns_names: list[str] = Field(default_factory=list)
    ip_addresses: list[str] = Field(default_factory=list)
    attributes: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    # When the registration ended (`Registry.unregister`); the owner stays for the inventory and the audit log.
    # Never in `attributes` in memory: the store keeps it there (`stored_attributes`), and loading lifts it out.
    unregistered_at: datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _lift_unregistered_marker(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        attributes = data.get("attributes")
        if not isinstance(attributes, dict) or UNREGISTERED_ATTRIBUTE not in attributes:
            return data
        attributes = dict(attributes)
        marker = attributes.pop(UNREGISTERED_ATTRIBUTE)
        lifted = {**data, "attributes": attributes}
        if lifted.get("unregistered_at") is None:
            lifted["unregistered_at"] = _marker_time(marker)
        return lifted

    @property
    def unregistered(self) -> bool:
        return self.unregistered_at is not None

    def stored_attributes(self) -> dict[str, Any]:
        """The attributes as the store keeps them: with the unregistered marker, when there is one."""
        if self.unregistered_at is None:
            return dict(self.attributes)
        return {**self.attributes, UNREGISTERED_ATTRIBUTE: self.unregistered_at.isoformat()}

    @property
    def role(self) -> OwnerRole | None:
        """The typed role; None for none, and for a value no registration could have stored (older data)."""
        value = self.attributes.get(ROLE_ATTRIBUTE)
        try:
            return OwnerRole(value) if isinstance(value, str) else None
        except ValueError:
            return None


def _marker_time(value: object) -> datetime:
    """The stored unregistered marker as a time. Any marker ends the registration, as it always did: one that
    does not read as a time (edited by hand) counts as ended at the epoch rather than not at all."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime(1970, 1, 1, tzinfo=UTC)


class OwnerRegistration(BaseModel):
    """Whom to register (what `Registry.register` takes), for a use case that registers on its way."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    group: str
    name: str
    site: str | None = None
    application_uri: str | None = None
    dns_names: list[str] = Field(default_factory=list)
    ip_addresses: list[str] = Field(default_factory=list)


class CARecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    parent_id: str | None
    group: str | None
    site: str | None
    key_type: KeyType
    key_backend: str
    key_ref: str
    certificate_der: bytes
    serial: str
    fingerprint_sha256: str
    not_before: datetime
    not_after: datetime
    active: bool
    created_at: datetime

    @property
    def is_root(self) -> bool:
        return self.parent_id is None


class CAStatus(BaseModel):
    """A CA with what its record alone does not say: whether its issuer revoked it (the live revocation index)."""

    model_config = ConfigDict(frozen=True)

    record: CARecord
    revoked: bool

    def live_at(self, now: datetime) -> bool:
        """Active, not yet ended and not revoked: a CA whose key and CRLs still matter."""
        return self.record.active and self.record.not_after > now and not self.revoked


class KeyProbe(BaseModel):
    """Whether a CA's key is reachable and signs something its certificate verifies."""

    model_config = ConfigDict(frozen=True)

    ca_id: str
    ok: bool
    problem: str | None = None  # why not, in words (the key backend's own message where it gave one)


class CertificateRecord(BaseModel):
    """One certificate in the inventory: everything ever issued, shipped or not."""

    model_config = ConfigDict(frozen=True)

    serial: str  # lowercase hex, no leading zeros
    issuer_ca_id: str
    owner_id: str | None
    group: str
    site: str | None
    subject: str
    san_uri: str | None
    key_type: KeyType
    not_before: datetime
    not_after: datetime
    fingerprint_sha256: str
    issuance: IssuanceKind
    issued_at: datetime
    delivered: bool
    superseded_by: str | None = None
    revoked_at: datetime | None = None
    revocation_reason: RevocationReason | None = None
    der: bytes | None = None

    def status_at(self, now: datetime) -> CertificateStatus:
        if self.revoked_at is not None:
            return CertificateStatus.REVOKED
        if self.not_after < now:
            return CertificateStatus.EXPIRED
        if self.superseded_by is not None:
            return CertificateStatus.SUPERSEDED
        if not self.delivered:
            return CertificateStatus.NOT_DELIVERED
        return CertificateStatus.ACTIVE


class IssuedCertificate(BaseModel):
    """What issuance hands back: the recorded certificate, its chain and (server keygen) the key."""

    record: CertificateRecord
    certificate_der: bytes
    chain_der: list[bytes]  # issuing CA first, root last
    private_key: bytes | None = None  # encoded as asked (PEM PKCS#8 or PKCS#12)
    private_key_format: str | None = None
    reused: bool = False  # handed back from the inventory (an idempotent batch), not signed by this call


class Decommissioned(BaseModel):
    """The outcome of `Engine.decommission`: the ended registration and the certificates revoked with it."""

    model_config = ConfigDict(frozen=True)

    owner: Owner
    revoked: list[CertificateRecord]


class BootstrapPin(BaseModel):
    """The bootstrap certificate a device first enrolled with: from then on the only one it may enroll with."""

    model_config = ConfigDict(frozen=True)

    owner_id: str
    group: str
    fingerprint_sha256: str  # of the bootstrap certificate's DER: this exact certificate, nothing else
    subject: str  # RFC 4514, for people
    issuer: str  # RFC 4514 issuer name (the manufacturer CA; the subject itself for a factory certificate)
    not_after: datetime
    serial: str  # the operational certificate issued when the pin was set
    pinned_at: datetime
    pinned_by: str


class CrlRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    ca_id: str
    crl_number: int
    this_update: datetime
    next_update: datetime
    entries: int
    der: bytes


class AuditRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class TrustListMask(IntEnum):
    """Which of the four lists a trust list carries (same bit values as OPC UA TrustListMasks)."""

    NONE = 0
    TRUSTED_CERTIFICATES = 1
    TRUSTED_CRLS = 2
    ISSUER_CERTIFICATES = 4
    ISSUER_CRLS = 8
    ALL = 15


class TrustListContent(BaseModel):
    """The four lists of a trust list, as DER blobs, in the shape of OPC UA TrustListDataType.

    trusted_*: certificates (and the CRLs of those that are CAs) that are trusted as they are;
    issuer_*: CAs that may appear in a chain but are not trusted on their own, and their CRLs.
    """

    model_config = ConfigDict(frozen=True)

    specified_lists: int = TrustListMask.ALL
    trusted_certificates: list[bytes] = Field(default_factory=list)
    trusted_crls: list[bytes] = Field(default_factory=list)
    issuer_certificates: list[bytes] = Field(default_factory=list)
    issuer_crls: list[bytes] = Field(default_factory=list)

    def content_hash(self) -> str:
        """SHA-256 over a canonical encoding; equal content always gives the same hash."""
        import hashlib

        h = hashlib.sha256()
        h.update(self.specified_lists.to_bytes(4, "big"))
        for blobs in (self.trusted_certificates, self.trusted_crls,
                      self.issuer_certificates, self.issuer_crls):
            h.update(len(blobs).to_bytes(4, "big"))
            for blob in sorted(blobs):
                h.update(len(blob).to_bytes(4, "big"))
                h.update(blob)
        return h.hexdigest()


class TrustList(BaseModel):
    """A versioned trust list of one certificate group."""

    model_config = ConfigDict(frozen=True)

    group: str
    version: int
    content_hash: str
    created_at: datetime
    content: TrustListContent


# -- inventory lines ------------------------------------------------------------------------------
class ExpiringCertificate(NamedTuple):
    """One row of the "what expires soon" report.

    A tuple, not a pydantic model, on purpose: the report covers tens of thousands of rows on a large
    plant and is built straight from the covering index (validating each row would cost 4 µs, 100 ms for
    26k rows). The data comes from the engine's own store, so there is nothing to validate.
    """

    serial: str
    subject: str
    group: str
    site: str | None
    owner_id: str | None
    not_after_epoch: int
    delivered: int

    @property
    def not_after(self) -> datetime:
        return from_epoch(self.not_after_epoch)


class ListedCertificate(NamedTuple):
    """One line of the inventory as `otpki certs list` shows it (`Inventory.listing`).

    A tuple, not a CertificateRecord, like ExpiringCertificate and for its reason: the listing is the whole
    inventory, and building 10k validated records took as long as the rest of the command.
    """

    serial: str
    subject: str
    group: str
    site: str | None
    owner_id: str | None
    not_after_epoch: int
    status: CertificateStatus
    issuance: IssuanceKind

    @property
    def not_after(self) -> datetime:
        return from_epoch(self.not_after_epoch)


class OwnerLine(NamedTuple):
    """One line of a page of a group's owners (the console's Devices page): the registration, its newest
    certificate (latest not_after) and when the device was last seen on a broker, if ever."""

    owner: Owner
    newest: ListedCertificate | None
    last_seen: datetime | None


class OwnerPage(NamedTuple):
    lines: list[OwnerLine]
    total: int  # owners in the group


# -- certificate requests -----------------------------------------------------------------------------
class RequestKind(StrEnum):
    CSR = "csr"
    NEW_KEY = "new-key"
    # A device's own CSR that the device collects itself (EST simpleenroll/simplereenroll in a group that requires
    # approval): approval records the decision, and the device's next identical request issues the certificate,
    # with what its credential implies (a bootstrap pin, the renewal of the certificate it presented).
    DEVICE_CSR = "device-csr"


class CertificateRequest(BaseModel):
    """One certificate request as stored. Holds no secret: no private key, no password."""

    model_config = ConfigDict(frozen=True)

    id: str
    kind: RequestKind
    owner_id: str
    group: str
    site: str | None = None
    status: RequestStatus
    csr_der: bytes | None = None  # CSR requests
    key_type: KeyType | None = None  # new-key requests: what will be generated, in what format
    key_format: str | None = None
    has_password: bool = False
    subject_name: str | None = None
    dns_names: list[str] | None = None  # None: the owner's registered names
    ip_addresses: list[str] | None = None
    requester_fingerprint: str | None = None  # SHA-256 of the requester's client certificate, lowercase hex
    submitted_by: str
    submitted_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None  # why it was rejected or expired
    serial: str | None = None  # the certificate, once issued
    issued_at: datetime | None = None


# -- delivery targets -----------------------------------------------------------------------------------
class PinSource(StrEnum):
    REGISTERED = "registered"  # given when the target was added
    FIRST_CONTACT = "first_contact"  # trust on first use: what the target presented the first time
    OPERATOR = "operator"  # re-pinned by an operator (a reset or replaced device)


class TargetPin(BaseModel):
    """The certificate (SHA-256 of its DER) a target must present while it holds no engine certificate."""

    fingerprint_sha256: str
    source: PinSource
    pinned_at: datetime
    pinned_by: str


class TargetState(StrEnum):
    PENDING = "pending"  # never delivered
    DELIVERED = "delivered"
    RETRYING = "retrying"  # the last attempt failed; next_attempt_at says when to try again
    # The last push delivered the certificate, but the trust list it wrote reads back different from what was
    # written (the target answered Good and did not apply it): due again at next_attempt_at.
    NOT_APPLIED = "not_applied"


class DeliveryTarget(BaseModel):
    id: str
    owner_id: str
    kind: str
    address: str
    credentials_ref: str
    group: str
    site: str | None
    state: TargetState
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    delivered_serial: str | None
    delivered_trust_version: int | None
    updated_at: datetime
    pin: TargetPin | None = None
