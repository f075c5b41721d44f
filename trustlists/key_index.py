"""Which certificates certify which public key: what makes a re-run factory batch hand back, not re-issue.

The store writes a (serial, SHA-256 of SubjectPublicKeyInfo) row with every certificate. Data directories
from before that table existed are indexed once, lazily, the first time something asks (`ensure_complete`).

`judge` decides what a CSR's key history means for a new request by `owner_id`:
- an active certificate (not revoked, superseded or expired, issuer not revoked) for the same owner: reuse it;
- the key was ever revoked for keyCompromise, for anyone: refuse, whoever asks;
- the key is active in the certificate of another owner of the same group: refuse (one key, one device; a
  cloned key is a factory defect). Across groups a key may be shared: one box can be an OPC UA application
  and an MQTT device, registered once in each group;
- the owner's newest certificate for this key was superseded (renewed): refuse, the key was retired;
- otherwise (never certified, expired, revoked for another reason): issue a new certificate.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

from trustlists.der import certificate_spki_sha256
from trustlists.errors import OtpkiError, PolicyViolation
from trustlists.models import CertificateRecord, RevocationReason
from trustlists.store.base import Store
from trustlists.store.rows import CertificateKey

COMPLETE_MARK = "certificate_keys_complete"
_BACKFILL_CHUNK = 2000


class KeyClaim(NamedTuple):
    """Who asks for a certificate for which key."""

    owner_id: str
    group: str
    spki_sha256: str


def ensure_complete(store: Store) -> int:
    """Index the certificates recorded before the key index existed; returns how many were added.

    Idempotent and safe against a concurrent run (rows already there are kept); once done, a mark in the
    meta table makes every later call one query.
    """
    with store.read() as tx:
        if tx.get_meta(COMPLETE_MARK) is not None:
            return 0
    added, after = 0, ""
    while True:
        with store.read() as tx:
            missing = tx.certificates_missing_key(after, _BACKFILL_CHUNK)
        if not missing:
            break
        rows = [CertificateKey(serial, certificate_spki_sha256(der)) for serial, der in missing]
        with store.transaction() as tx:
            tx.insert_certificate_keys(rows)
        added += len(rows)
        after = missing[-1][0]
    with store.transaction() as tx:
        tx.set_meta(COMPLETE_MARK, "1")
    return added


def is_active(record: CertificateRecord, now: datetime) -> bool:
    return record.revoked_at is None and record.superseded_by is None and record.not_after >= now


def judge(history: list[CertificateRecord], claim: KeyClaim, *, now: datetime,
          issuer_revoked: Callable[[str], bool]) -> CertificateRecord | OtpkiError | None:
    """What to do with `claim`, given every certificate ever issued for its key (see the module text):
    the certificate to hand back, the refusal, or None for "issue a new one"."""
    owner_id = claim.owner_id
    compromised = next((r for r in history if r.revocation_reason is RevocationReason.KEY_COMPROMISE), None)
    if compromised is not None:
        return PolicyViolation(f"this key was revoked for key compromise (certificate {compromised.serial}); "
                               "it is never certified again: the device needs a new key", reason="key_compromised")
    live = {r.serial for r in history if is_active(r, now) and not issuer_revoked(r.issuer_ca_id)}
    other = next((r for r in history if r.serial in live and r.owner_id != owner_id and r.group == claim.group),
                 None)
    if other is not None:
        return PolicyViolation(f"this key is already certified for another owner in group {claim.group} "
                               f"(certificate {other.serial}); every device needs its own key", reason="key_in_use")
    mine = sorted((r for r in history if r.owner_id == owner_id),
                  key=lambda r: (r.issued_at, r.not_after, r.serial), reverse=True)
    current = next((r for r in mine if r.serial in live), None)
    if current is not None:
        return current
    if mine and mine[0].superseded_by is not None:
        return PolicyViolation(f"this key's certificate {mine[0].serial} was renewed by {mine[0].superseded_by}; "
                               "a retired key is not certified again", reason="key_superseded")
    return None
