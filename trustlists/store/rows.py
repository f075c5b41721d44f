"""Rows the store hands to the engine (and takes from it) that are no engine value of their own.

Named tuples, like `ExpiringCertificate`: several of these come by the hundred thousand (CRL entries, audit
records), straight from an index, and a validated model per row would cost more than the query. The data is
the engine's own, written through the store, so there is nothing to validate on the way back.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from trustlists.models import CertificateRecord


class CaTableSignature(NamedTuple):
    """Changes whenever a CA is added or (de)activated."""

    cas: int
    active: int


class NewCertificate(NamedTuple):
    """A certificate to record: its inventory record, its DER and the SHA-256 of the key it certifies."""

    record: CertificateRecord
    der: bytes
    spki_sha256: str


class CertificateState(NamedTuple):
    """Who issued a certificate and whether it was revoked: all an OCSP answer needs of its row."""

    issuer_ca_id: str
    revoked_at: int | None  # epoch seconds
    reason: int | None


class CertificateDer(NamedTuple):
    serial: str
    der: bytes


class CertificateKey(NamedTuple):
    """The SHA-256 of the SubjectPublicKeyInfo a certificate certifies."""

    serial: str
    spki_sha256: str


class RevocationRow(NamedTuple):
    seq: int
    issuer_ca_id: str
    serial: str
    revoked_at: int  # epoch seconds
    reason: int


class CrlEntry(NamedTuple):
    """One entry of a CRL as `build_crl` takes it."""

    serial: str  # hex
    revoked_at: int  # epoch seconds
    reason: int


class ExternalTrust(NamedTuple):
    """A certificate or CRL imported into a group's trust list (not one of the engine's own)."""

    list_name: str
    kind: str
    fingerprint: str
    der: bytes
    note: str


class TrustVersion(NamedTuple):
    version: int
    content_hash: str
    created_at: datetime


class PinChange(NamedTuple):
    """A bootstrap pin set (fingerprint) or released (None)."""

    seq: int
    owner_id: str
    fingerprint: str | None


class RateBucket(NamedTuple):
    tokens: float
    stamp_us: int  # epoch microseconds


class LeaseRow(NamedTuple):
    """Who holds a lease and until when, in milliseconds of the store's clock."""

    name: str
    holder: str
    acquired_ms: int
    expires_ms: int


class AuditRow(NamedTuple):
    """An audit record as stored: `details` is the exact JSON text its hash covers."""

    seq: int
    at_us: int
    actor: str
    action: str
    subject: str
    details: str
    prev_hash: str
    hash: str


class AuditHead(NamedTuple):
    seq: int
    hash: str


class WebUserRow(NamedTuple):
    """A console user as stored (trustlists/accounts.py)."""

    name: str
    role: str
    password_hash: str  # argon2id, PHC string
    totp_secret: str  # base32
    totp_last_step: int  # the last RFC 6238 time step a code was accepted for
    created_at: int  # epoch seconds


class WebSessionRow(NamedTuple):
    id_sha256: str
    user_name: str
    csrf_token: str
    stage: str  # "password" (the TOTP code is still due) or "full"
    created_at: int
    expires_at: int


class WebTokenRow(NamedTuple):
    name: str
    role: str
    user_name: str | None  # whose TOTP a ca-admin token's guarded actions need
    token_sha256: str
    created_at: int
    revoked_at: int | None


class LoginFailuresRow(NamedTuple):
    subject: str  # "user:NAME" or "addr:IP"
    failures: int
    window_start: int  # epoch seconds
    locked_until: int  # epoch seconds; 0 when not locked


class CertificateCount(NamedTuple):
    """How many certificates of a group and site are in a state (the plant overview)."""

    group: str
    site: str | None
    status: str
    certificates: int


# One row of a table, in the order of `StoreReader.table_columns`: what a whole-store copy or backup moves without
# knowing the table (trustlists/store_copy.py). Values are str, int, float, bytes or None.
TableRow = tuple[object, ...]
