"""Copying a whole store into an empty one (`otpki db copy`): a plant moves from SQLite to PostgreSQL.

Every table goes across as it is, row for row, ids and sequence numbers included (the audit chain hashes its
sequence numbers; the revocation index remembers the last revocation it read). The source is read in one snapshot
(`Store.snapshot`), so instances on it may keep running, and the copy is what the store held at one moment. The
target is written in one transaction: either all of it commits, checked, or nothing does.

The check, inside that transaction, before it commits: the target has the same tables as the source, each with as
many rows and the same digest of its rows (an order-free sum of each row's SHA-256, so the two backends' orders do
not matter), and its audit chain verifies. Then the copy itself is audited on the target, in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from datetime import datetime

from pydantic import BaseModel

from trustlists import audit
from trustlists.clock import utcnow
from trustlists.errors import AuditTampered, InvalidState, StoreError
from trustlists.store.base import Store, StoreReader, StoreWriter
from trustlists.store.rows import TableRow
from trustlists.store.sql import TRUST_VERSION_FLOOR_KEY, crl_number_floor_key

__all__ = ["COPY_ORDER", "CaKey", "StoreCopy", "TableCopy", "copy_store", "is_empty", "table_digest"]

# Tables in an order that inserts every referenced row before the rows that reference it (foreign keys are
# checked at once on PostgreSQL). A table the schema has and this list lacks stops a copy before it writes: a new
# migration's table must be placed here (tests/trustlists/test_store_copy.py checks it against the schema).
COPY_ORDER = (
    "meta", "cas", "owners", "bootstrap_allowlist", "certificates", "certificate_tallies", "certificate_keys",
    "revocations", "crls",
    "trust_external", "trust_versions", "audit_log", "cert_requests", "delivery_targets", "delivery_target_pins",
    "bootstrap_pins", "bootstrap_pin_changes", "seen_requests", "rate_buckets", "leases", "web_users", "web_sessions",
    "web_tokens", "web_login_failures", "device_presence",
)
_BATCH = 2_000
_MOD = 1 << 256


class TableCopy(BaseModel):
    table: str
    rows: int
    digest: str  # sum of the SHA-256 of every row, modulo 2**256, in hex: equal row sets give equal digests


class CaKey(BaseModel):
    ca_id: str
    key_backend: str  # file: an encrypted file in the data directory's keys/; pkcs11: an HSM object
    key_ref: str


class StoreCopy(BaseModel):
    source: str
    target: str
    tables: list[TableCopy]
    audit_records: int  # the source's audit chain, verified on the target before the copy's own record
    audit_seq: int  # the sequence number of the copy's audit record on the target
    ca_keys: list[CaKey] = []  # where each copied CA's key is (a backup takes the key files along)
    next_crl_numbers: dict[str, int] = {}  # CA id -> the lowest number its next CRL may have (crl_number_gap)
    trust_version_floor: int | None = None  # the lowest number of any group's next trust-list version
    trust_list_versions: dict[str, int] = {}  # group -> its current version, renumbered (trust_version_gap)


def _row_hash(row: TableRow) -> int:
    encoded = json.dumps([v.hex() if isinstance(v, bytes) else v for v in row], separators=(",", ":"),
                         ensure_ascii=False)
    # Type tags keep b"ab" apart from the string "6162".
    tags = "".join(type(v).__name__[0] for v in row)
    return int.from_bytes(hashlib.sha256(f"{tags}:{encoded}".encode()).digest(), "big")


def table_digest(rows: Iterable[TableRow]) -> tuple[int, str]:
    """How many rows, and the digest of their set (any order)."""
    total = count = 0
    for row in rows:
        total = (total + _row_hash(row)) % _MOD
        count += 1
    return count, f"{total:064x}"


def _ordered_tables(tx: StoreReader, where: str) -> list[str]:
    present = set(tx.table_names())
    unknown = sorted(present - set(COPY_ORDER))
    if unknown:
        raise StoreError(f"the store at {where} has tables this otpki cannot copy: {', '.join(unknown)}",
                         reason="store_copy_unknown_table")
    return [t for t in COPY_ORDER if t in present]


def is_empty(store: Store) -> bool:
    """No row in any table: a store nothing has been written to yet (its schema may be there)."""
    with store.read() as tx:
        return not any(tx.count_rows(t) for t in tx.table_names())


def _parents_first(rows: list[TableRow], columns: list[str]) -> list[TableRow]:
    """CA rows with every parent before its children (cas.parent_id references cas.id)."""
    ids, parents = columns.index("id"), columns.index("parent_id")
    placed: set[object] = set()
    ordered: list[TableRow] = []
    pending = rows
    while pending:
        ready = [r for r in pending if r[parents] is None or r[parents] in placed]
        if not ready:  # a parent that is not in the table: let the store's foreign key say so
            ready = pending
        ordered.extend(ready)
        placed.update(r[ids] for r in ready)
        pending = [r for r in pending if r not in ready]
    return ordered


def _batches(rows: Iterator[TableRow]) -> Iterator[list[TableRow]]:
    batch: list[TableRow] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def copy_store(source: Store, target: Store, *, source_name: str, target_name: str, actor: str,
               at: datetime | None = None, action: str = "store.copy", crl_number_gap: int = 0,
               trust_version_gap: int = 0) -> StoreCopy:
    """Copy every row of `source` into the empty `target`, check the copy, and audit it on the target (`action`:
    store.copy, store.backup into a backup's store, store.restore out of one).

    `crl_number_gap`: each CA's next CRL on the target is numbered at least this far above the last one copied.
    A restore sets it: CRLs published after the backup was taken are out in the world, and a CRL number must
    never be used twice nor go backwards (RFC 5280 5.2.3; the numbers need not be consecutive).

    `trust_version_gap`: likewise for trust-list versions, which a restore sets too. A PLC or broker handed version
    N after the backup was taken must never be offered N, or a lower number, with other content: it would keep
    what it has (an equal number) or refuse to go back. Every group's current version is recorded again, with
    the same content, numbered this far above the highest version copied, and every group's next version (one
    the backup has no version of included) is numbered above that: the restored plant hands every target a
    version newer than any it can hold.

    InvalidState (store_copy_target_not_empty) when the target holds any row; StoreError when the two stores do
    not have the same tables or the check finds a difference (nothing is then committed); AuditTampered when the
    source's audit chain does not verify (a broken chain is not carried into a new store unnoticed).
    """
    copied: list[TableCopy] = []
    with source.snapshot() as src, target.transaction() as dst:
        # A second copy (or restore) into the same database at the same moment is refused at once: waiting for the
        # first one, which may take minutes, would end in StoreBusy, or in finding its rows.
        if not dst.try_lock("store", "copy-target"):
            raise InvalidState(f"another otpki db copy or restore is writing into {target_name} right now: "
                               "copy into a new, empty database", reason="store_copy_target_busy")
        # Taken before looking at the target: whatever appends to its logs waits until the copy commits.
        dst.serialise_appends()
        tables = _ordered_tables(src, source_name)
        target_tables = _ordered_tables(dst, target_name)
        if tables != target_tables:
            raise StoreError(f"the stores do not have the same tables: {source_name} has {', '.join(tables)}; "
                             f"{target_name} has {', '.join(target_tables)}", reason="store_copy_schema_differs")
        full = [(t, n) for t in tables if (n := dst.count_rows(t))]
        if full:
            raise InvalidState(
                f"the target store {target_name} is not empty ({', '.join(f'{t}: {n} rows' for t, n in full)}): "
                "copy into a new, empty database", reason="store_copy_target_not_empty")
        chain = audit.verify(src)
        if not chain.ok:
            raise AuditTampered(f"the audit log of {source_name} does not verify ({chain.problem}); "
                                "not copied", reason="audit_tampered")
        for table in tables:
            columns = src.table_columns(table)
            if sorted(columns) != sorted(dst.table_columns(table)):
                raise StoreError(f"table {table} has other columns in {target_name}: not copied",
                                 reason="store_copy_schema_differs")
            rows = src.table_rows(table, columns)
            if table == "cas":
                rows = iter(_parents_first(list(rows), columns))
            count = 0
            total = 0
            for batch in _batches(rows):
                dst.load_rows(table, columns, batch)
                count += len(batch)
                for row in batch:
                    total = (total + _row_hash(row)) % _MOD
            dst.loaded_table(table)
            copied.append(TableCopy(table=table, rows=count, digest=f"{total:064x}"))
        # The check reads back what the target now holds, through its own driver and types.
        for done in copied:
            columns = src.table_columns(done.table)
            count, digest = table_digest(dst.table_rows(done.table, columns))
            if (count, digest) != (done.rows, done.digest):
                raise StoreError(f"table {done.table} differs after the copy ({count} rows in {target_name}, "
                                 f"{done.rows} in {source_name}): nothing was committed",
                                 reason="store_copy_mismatch")
        copied_chain = audit.verify(dst)
        if not copied_chain.ok or copied_chain.records != chain.records:
            raise StoreError(f"the audit log does not verify on {target_name} after the copy "
                             f"({copied_chain.problem or 'record count differs'}): nothing was committed",
                             reason="store_copy_mismatch")
        when = at or utcnow()
        floors = _raise_crl_floors(dst, crl_number_gap) if crl_number_gap > 0 else {}
        versions = _raise_trust_versions(dst, trust_version_gap, when) if trust_version_gap > 0 else None
        details: dict[str, object] = {
            "source": source_name, "audit_records": chain.records,
            "tables": {c.table: {"rows": c.rows, "digest": c.digest} for c in copied}}
        if floors:
            details["next_crl_numbers"] = floors
        if versions is not None:
            details["trust_version_floor"], details["trust_list_versions"] = versions
        record = audit.append(dst, actor=actor, action=action, subject=target_name, at=when, details=details)
        ca_keys = [CaKey(ca_id=ca.id, key_backend=ca.key_backend, key_ref=ca.key_ref) for ca in dst.list_cas()]
    return StoreCopy(source=source_name, target=target_name, tables=copied, audit_records=chain.records,
                     audit_seq=record.seq, ca_keys=ca_keys, next_crl_numbers=floors,
                     trust_version_floor=versions[0] if versions else None,
                     trust_list_versions=versions[1] if versions else {})


def _raise_crl_floors(tx: StoreWriter, gap: int) -> dict[str, int]:
    floors = {}
    for ca in tx.list_cas():
        floor = tx.next_crl_number(ca.id) - 1 + gap
        tx.set_meta(crl_number_floor_key(ca.id), str(floor))
        floors[ca.id] = floor
    return floors


def _raise_trust_versions(tx: StoreWriter, gap: int, at: datetime) -> tuple[int, dict[str, int]]:
    """Renumber every group's current trust list `gap` above the highest version (or floor) there is, and set the
    floor of every group's next version there: (the floor, group -> its renumbered version)."""
    latest = tx.latest_trust_versions()
    old_floor = tx.get_meta(TRUST_VERSION_FLOOR_KEY)
    highest = max([v.version for v in latest.values()] + [int(old_floor) if old_floor else 0])
    floor = highest + gap
    for group, current in sorted(latest.items()):
        tx.insert_trust_version(group, floor, current.content_hash, at,
                                "restore: renumbered above any version handed out after the backup")
    tx.set_meta(TRUST_VERSION_FLOOR_KEY, str(floor + 1))
    return floor + 1, {group: floor for group in sorted(latest)}
