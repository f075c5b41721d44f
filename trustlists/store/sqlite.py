"""The SQLite backend: one file, WAL journal, one writer at a time."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from trustlists.errors import AlreadyExists, StoreBusy, StoreError
from trustlists.store import migrations
from trustlists.store.base import StoreWriter
from trustlists.store.migrations import Migration, SchemaStatus
from trustlists.store.sql import MIGRATIONS_TABLE_DDL, SqlTx


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, sqlite3.IntegrityError):
        return AlreadyExists(f"store constraint violated: {exc}")
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc).lower():
        return StoreBusy(
            "the database is locked by another otpki process; wait for it to finish or stop it, "
            "then retry")
    if isinstance(exc, sqlite3.Error):
        return StoreError(f"database error: {exc}")
    return exc


class SqliteStore:
    """A single connection guarded by a lock.

    SQLite serialises writers anyway; one connection shared by the engine's worker threads keeps
    transactions simple and avoids lock-upgrade deadlocks (writes start with BEGIN IMMEDIATE).
    """

    dialect: migrations.Dialect = "sqlite"

    def __init__(self, path: Path, *, busy_timeout_s: float = 5.0, check_schema: bool = True) -> None:
        """`check_schema`: refuse (SchemaMismatch) a store whose schema is not the one this otpki knows, and create
        the schema in an empty one; off only for `otpki db status` and `otpki db upgrade`."""
        self.path = path
        try:
            self._conn = sqlite3.connect(
                str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed certificate survives a power cut, not only a process crash. The fsync per
            # commit is what `issue_many` amortises over a batch.
            self._conn.execute("PRAGMA synchronous=FULL")
            # Checkpoint every 10000 WAL pages (~40 MB) instead of SQLite's 1000. Certificates land on random
            # leaves of four indexes (serial, fingerprint, key index serial and SPKI hash), so a batch of 100
            # dirties ~400 pages; consecutive commits dirty mostly the same leaves, and a checkpoint copies each
            # page once however often it was written since the last one. Measured on batches of 100 into a store of
            # 5-15k certificates: 10-30% less store CPU per certificate, less wall time. Durability does not depend
            # on it: every commit still syncs the WAL.
            self._conn.execute("PRAGMA wal_autocheckpoint=10000")
            self._conn.execute("PRAGMA mmap_size=268435456")
            self._conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise _translate(exc) from exc
        self._lock = threading.RLock()
        self._depth = 0
        if check_schema:
            try:
                self._open_schema()
            except BaseException:
                self._conn.close()
                raise

    # -- schema ---------------------------------------------------------------------------------------
    def _open_schema(self) -> None:
        status = self.schema_status()
        if status.empty:
            self.upgrade()
        else:
            status.check(str(self.path))

    def schema_status(self) -> SchemaStatus:
        with self._lock:
            try:
                tables = {row[0] for row in self._conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'")}
                version = 0
                if "schema_migrations" in tables:
                    version = self._conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"
                                                 ).fetchone()[0]
            except sqlite3.Error as exc:
                raise _translate(exc) from exc
        return migrations.status(self.dialect, int(version), empty=not tables)

    def upgrade(self, record: Callable[[StoreWriter, list[Migration]], None] | None = None) -> list[Migration]:
        """Apply the migrations this store has not had, each in its own transaction with its row in
        schema_migrations; returns those applied (none when it was current). `record(tx, applied)` runs in the
        transaction of the last one (the audit record of the upgrade). Safe against a concurrent upgrade: the
        version is read again under the write lock."""
        applied: list[Migration] = []
        with self._lock:
            todo = [m for m in migrations.migrations(self.dialect) if m.version > self.schema_status().version]
            for n, migration in enumerate(todo):
                with self.transaction() as tx:
                    tx.execute(MIGRATIONS_TABLE_DDL)
                    done = tx.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
                    if migration.version <= done:
                        continue  # another process applied it meanwhile
                    for statement in _statements(migration.sql):
                        tx.execute(statement)
                    tx.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                               (migration.version, migration.name, int(time.time())))
                    applied.append(migration)
                    if record is not None and n == len(todo) - 1:
                        record(tx, applied)
        return applied

    @contextmanager
    def transaction(self, *, pipelined: bool = False) -> Iterator[SqlTx]:
        """A write unit of work; nested use joins the outer transaction. (`pipelined`: nothing to gather, SQLite runs
        in this process.)"""
        with self._lock:
            tx = SqlTx(self._conn, _translate)
            if self._depth:
                self._depth += 1
                try:
                    yield tx
                finally:
                    self._depth -= 1
                return
            tx.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield tx
            except BaseException:
                self._depth = 0
                self._conn.rollback()
                raise
            self._depth = 0
            try:
                self._conn.commit()
            except sqlite3.Error as exc:
                self._conn.rollback()
                raise _translate(exc) from exc

    def subscribe(self, channel: str, callback: Callable[[], None]) -> None:
        """No notifications on SQLite: readers poll (an indexed query on one local file)."""
        return None

    @contextmanager
    def read(self) -> Iterator[SqlTx]:
        with self._lock:
            yield SqlTx(self._conn, _translate)

    @contextmanager
    def snapshot(self) -> Iterator[SqlTx]:
        """A deferred transaction: in WAL mode its first read fixes the snapshot it sees to the end, while other
        connections keep writing (they append to the WAL; no checkpoint passes the snapshot)."""
        with self._lock:
            if self._depth:
                raise StoreError("a snapshot of the store cannot be taken inside one of its transactions")
            tx = SqlTx(self._conn, _translate)
            tx.execute("BEGIN DEFERRED")
            try:
                tx.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # fixes the snapshot now
                yield tx
            finally:
                self._conn.rollback()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _statements(script: str) -> Iterator[str]:
    """The statements of a migration file, one at a time: `executescript` would commit the open transaction
    before running them, and a migration's statements and its schema_migrations row commit together."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                yield pending
            pending = ""
    if pending.strip() and not all(ln.strip().startswith("--") or not ln.strip() for ln in pending.splitlines()):
        raise ValueError(f"a migration ends inside a statement: {pending.strip()[:80]!r}")
