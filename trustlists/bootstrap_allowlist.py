"""The bootstrap allow-list of a registration: which factory certificates may enroll a device.

`Owner.attributes["bootstrap"]` holds a list of entries, each `{"subject_cn": CN}` (a certificate issued by a
manufacturer CA imported into the group's trust list) or `{"sha256": fingerprint}` (exactly that certificate,
self-signed factory certificates included). `checked_attributes` validates and normalizes it where it enters
the engine (registration, update, rearm); `allow_list` reads it back. What the allow-list admits, and the pin
that narrows it to one certificate, is `trustlists.bootstrap`.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trustlists.errors import InvalidInput
from trustlists.models import ROLE_ATTRIBUTE, Owner

__all__ = ["ATTRIBUTE", "ROLE_ATTRIBUTE", "BootstrapEntry", "allow_list", "checked_attributes", "common_name",
           "parse_allow_list"]

ATTRIBUTE = "bootstrap"  # the key in Owner.attributes
_HEX = frozenset("0123456789abcdef")


class BootstrapEntry(BaseModel):
    """One certificate a device may enroll with: by subject CN (issued by an imported manufacturer CA) or by
    the SHA-256 fingerprint of the certificate itself (any issuer, self-signed factory certificates included)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject_cn: str | None = Field(None, min_length=1, max_length=64)  # RFC 5280 ub-common-name
    sha256: str | None = None

    @field_validator("subject_cn")
    @classmethod
    def _cn(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value != value.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ValueError("a subject CN has no control characters and no leading or trailing spaces")
        return value

    @field_validator("sha256", mode="before")
    @classmethod
    def _fingerprint(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        norm = value.strip().lower().replace(":", "")
        if len(norm) != 64 or not set(norm) <= _HEX:
            raise ValueError(f"{value!r} is not a SHA-256 fingerprint (64 hex digits)")
        return norm

    @model_validator(mode="after")
    def _one_kind(self) -> BootstrapEntry:
        if (self.subject_cn is None) == (self.sha256 is None):
            raise ValueError("an entry names either subject_cn or sha256")
        return self

    def stored(self) -> dict[str, str]:
        """The shape kept in Owner.attributes (and read by the Mosquitto sync): {"subject_cn": ..} or {"sha256": ..}."""
        return self.model_dump(exclude_none=True)

    def matches(self, subject_cn: str | None, fingerprint: str, *, fingerprint_only: bool = False) -> bool:
        if self.sha256 is not None:
            return self.sha256 == fingerprint
        return not fingerprint_only and subject_cn is not None and self.subject_cn == subject_cn


def parse_allow_list(value: object) -> list[BootstrapEntry]:
    """Validate an allow-list as it enters (registration, update, rearm); raises InvalidInput naming the problem."""
    if not isinstance(value, list):
        raise InvalidInput("the bootstrap allow-list must be a list of {subject_cn} / {sha256} entries",
                           reason="bad_bootstrap_entry")
    entries: list[BootstrapEntry] = []
    for i, raw in enumerate(value):
        try:
            entry = raw if isinstance(raw, BootstrapEntry) else BootstrapEntry.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise InvalidInput(f"bootstrap entry {i + 1}: {first.get('msg', 'invalid')}",
                               reason="bad_bootstrap_entry") from None
        if entry not in entries:
            entries.append(entry)
    return entries


def checked_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """Owner attributes with the bootstrap allow-list validated and normalized (fingerprints lowercase hex)."""
    if ATTRIBUTE not in attributes:
        return attributes
    entries = parse_allow_list(attributes[ATTRIBUTE])
    if entries and attributes.get(ROLE_ATTRIBUTE) is not None:
        raise InvalidInput("a service identity (an owner with a role) cannot have a bootstrap allow-list: "
                           "whoever enrolled with it would get the service's rights", reason="bootstrap_role")
    return {**attributes, ATTRIBUTE: [e.stored() for e in entries]}


def allow_list(owner: Owner) -> list[BootstrapEntry]:
    """The owner's allow-list as stored; entries that do not validate (written before validation existed) are
    skipped, so they admit nobody."""
    raw = owner.attributes.get(ATTRIBUTE)
    if not isinstance(raw, list):
        return []
    entries = []
    for item in raw:
        try:
            entries.append(BootstrapEntry.model_validate(item))
        except ValidationError:
            continue
    return entries


def common_name(cert: x509.Certificate) -> str | None:
    try:
        attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return None
    if len(attrs) != 1 or not isinstance(attrs[0].value, str):
        return None
    return attrs[0].value
