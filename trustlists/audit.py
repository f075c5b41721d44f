"""The append-only, hash-chained audit log.

Each record's hash covers its own fields and the previous record's hash, so editing a record breaks its
own hash and deleting one breaks the link of the next. Records are written in the same transaction as
the state change they describe: a change without its audit record never commits.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from trustlists.clock import utcnow
from trustlists.models import AuditRecord

__all__ = ["AuditRecord", "AuditVerification", "append", "records", "verify"]
from trustlists.store.base import StoreReader, StoreWriter
from trustlists.store.rows import AuditRow

GENESIS = "0" * 64
# The canonical encodings the hashes are computed over (they must never change: old records are re-hashed by
# `verify`). Encoders made once: json.dumps builds a new one per call when given options.
_RECORD_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_DETAILS_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def _record_hash(prev_hash: str, seq: int, at_us: int, actor: str, action: str, subject: str,
                 details_json: str) -> str:
    canonical = _RECORD_JSON.encode([seq, at_us, actor, action, subject, details_json, prev_hash])
    return hashlib.sha256(canonical.encode()).hexdigest()


def _details_json(details: dict[str, Any]) -> str:
    return _DETAILS_JSON.encode(details)


def append(tx: StoreWriter, *, actor: str, action: str, subject: str, details: dict[str, Any] | None = None,
           at: datetime | None = None) -> AuditRecord:
    details_json = _details_json(details or {})
    at = at or utcnow()
    at_us = int(at.timestamp() * 1_000_000)
    tx.serialise_appends()  # one chain: the head read here stays the head until this transaction commits
    last = tx.last_audit()
    seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS)
    digest = _record_hash(prev_hash, seq, at_us, actor, action, subject, details_json)
    rec = AuditRecord.model_construct(seq=seq, at=at, actor=actor, action=action, subject=subject,
                                      details=json.loads(details_json), prev_hash=prev_hash, hash=digest)
    tx.insert_audit(rec, at_us, details_json)
    # The head pointer lets verify() notice records cut off the end of the chain.
    tx.set_meta("audit_head", f"{seq}:{digest}")
    return rec


# How _RECORD_JSON writes a string (ensure_ascii=False): the joins below write what it writes for the whole list
# (items separated by ",", integers as int.__repr__) without building an encoder for every record.
_json_string = json.encoder.encode_basestring


def _unlinked(at_us: int, actor: str, action: str, subject: str, details_json: str) -> str:
    """What `_record_hash`'s canonical text holds between the record's seq and the previous record's hash."""
    return f"{at_us},{_json_string(actor)},{_json_string(action)},{_json_string(subject)},{_json_string(details_json)}"


def _linked_hash(prev_hash: str, seq: int, unlinked: str) -> str:
    """`_record_hash` of a record whose `_unlinked` text is known: the same canonical text, made by joining."""
    return hashlib.sha256(f"[{seq},{unlinked},{_json_string(prev_hash)}]".encode()).hexdigest()


def append_many(tx: StoreWriter, entries: list[tuple[str, str, str, dict[str, Any], datetime]]) -> None:
    """Append (actor, action, subject, details, at) records as one chain segment: one read of the head,
    one multi-row insert, one head update. Used for batches of certificates."""
    if not entries:
        return
    # Everything that does not depend on the chain's head first: from the head on, the append lock is held to the
    # commit, and every other instance's writer waits for it (PostgreSQL).
    encoded = []
    for actor, action, subject, details, at in entries:
        details_json = _details_json(details)
        at_us = int(at.timestamp() * 1_000_000)
        encoded.append((at_us, actor, action, subject, details_json,
                        _unlinked(at_us, actor, action, subject, details_json)))
    tx.serialise_appends()
    last = tx.last_audit()
    seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS)
    rows = []
    for at_us, actor, action, subject, details_json, unlinked in encoded:
        digest = _linked_hash(prev_hash, seq, unlinked)
        rows.append(AuditRow(seq, at_us, actor, action, subject, details_json, prev_hash, digest))
        prev_hash = digest
        seq += 1
    tx.insert_audit_rows(rows)
    tx.set_meta("audit_head", f"{seq - 1}:{prev_hash}")


class AuditVerification(BaseModel):
    ok: bool
    records: int
    first_bad_seq: int | None = None
    problem: str | None = None


def verify(tx: StoreReader) -> AuditVerification:
    expected_prev = GENESIS
    expected_seq = 1
    count = 0
    for seq, at_us, actor, action, subject, details, prev_hash, digest in tx.iter_audit():
        if seq != expected_seq:
            return AuditVerification(ok=False, records=count, first_bad_seq=expected_seq,
                                     problem=f"record {expected_seq} is missing (next found is {seq})")
        if prev_hash != expected_prev:
            return AuditVerification(ok=False, records=count, first_bad_seq=seq,
                                     problem=f"record {seq} does not link to record {seq - 1}")
        if _record_hash(prev_hash, seq, at_us, actor, action, subject, details) != digest:
            return AuditVerification(ok=False, records=count, first_bad_seq=seq,
                                     problem=f"record {seq} was modified after it was written")
        expected_prev = digest
        expected_seq += 1
        count += 1
    head = tx.get_meta("audit_head")
    if head is not None and head != f"{count}:{expected_prev}":
        head_seq = int(head.split(":", 1)[0])
        return AuditVerification(ok=False, records=count, first_bad_seq=count + 1,
                                 problem=f"the log ends at record {count} but record {head_seq} was written "
                                         "(records were deleted from the end)")
    return AuditVerification(ok=True, records=count)


def records(tx: StoreReader, *, action: str | None = None, since: datetime | None = None,
            subject: str | None = None) -> Iterator[AuditRecord]:
    since_us = int(since.timestamp() * 1_000_000) if since is not None else None
    return rows_to_records(tx.iter_audit(action=action, since_us=since_us, subject=subject))


def rows_to_records(rows: Iterable[AuditRow]) -> Iterator[AuditRecord]:
    for seq, at_us, actor, act, subject, details, prev_hash, digest in rows:
        yield AuditRecord(seq=seq, at=datetime.fromtimestamp(at_us / 1_000_000, UTC), actor=actor,
                          action=act, subject=subject, details=json.loads(details),
                          prev_hash=prev_hash, hash=digest)
