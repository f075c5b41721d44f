"""The PostgreSQL backend: a psycopg 3 connection pool, concurrent writers in any number of processes and hosts.

Every query is the shared SQL of `SqlTx`; what differs is here:
- transactions: a write is READ COMMITTED (each statement sees what others committed before it; the steps that
  read a value and write the next one take a lock first, `lock`); a read is REPEATABLE READ READ ONLY, one
  consistent snapshot for all its queries (an audit verification sees the chain and its head pointer as of one
  moment). Nested `transaction()` is a SAVEPOINT: a failed statement aborts a PostgreSQL transaction, and a caller
  that catches the error (a serial clash, retried) goes on in the outer one as on SQLite. A `read()` inside a
  transaction of the same thread reads through it (it sees what the transaction wrote), as on SQLite;
- locks: `lock(name, key)` is a transaction-scoped advisory lock on a 64-bit hash of the pair, waited for at most
  the busy timeout (lock_timeout), then StoreBusy, like SQLite's busy timeout;
- streaming: queries that may return millions of rows (CRL entries, the audit log) run on a server-side cursor;
- errors: psycopg's are translated into the engine's (constraint -> AlreadyExists, lock wait/deadlock/serialisation
  -> StoreBusy, anything else -> StoreError), with the password never in a message.

psycopg is imported here only: a SQLite deployment never loads it.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg_pool
from psycopg import errors as pgerrors

from trustlists.errors import AlreadyExists, StoreBusy, StoreError
from trustlists.store import migrations
from trustlists.store.base import StoreWriter
from trustlists.store.migrations import Migration, SchemaStatus
from trustlists.store.pg_listen import PgSubscription
from trustlists.store.sql import MIGRATIONS_TABLE_DDL, SqlTx

# The advisory lock that serialises schema upgrades (any 64-bit number no `lock()` key hashes to by design).
_UPGRADE_LOCK = 0x6F74706B69_0001  # "otpki" 1
# How long an instance waits for another one's schema upgrade (instances started at once on a new database): a
# migration takes as long as it takes on the data there is, not the busy timeout of an ordinary write.
_UPGRADE_WAIT_MS = 600_000
# Held (session-level) for a whole upgrade, across its per-migration transactions: an instance that finds the
# schema older than its own waits on it, so it never mistakes another instance's upgrade half-way for an old store.
_UPGRADING_LOCK = 0x6F74706B69_0002  # "otpki" 2


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _translate_for(where: str) -> Callable[[Exception], Exception]:
    def translate(exc: Exception) -> Exception:
        if isinstance(exc, pgerrors.IntegrityError):
            return AlreadyExists(f"store constraint violated: {exc.diag.message_primary or exc}")
        if isinstance(exc, pgerrors.LockNotAvailable | pgerrors.DeadlockDetected | pgerrors.SerializationFailure
                      | pgerrors.QueryCanceled | psycopg_pool.PoolTimeout):
            return StoreBusy("the database is locked by another otpki transaction for longer than the busy timeout; "
                             f"retry ({type(exc).__name__})")
        if isinstance(exc, psycopg.OperationalError):
            return StoreError(f"cannot use the database {where}: {exc}")
        if isinstance(exc, psycopg.Error):
            return StoreError(f"database error: {exc}")
        return exc

    return translate


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def lock_id(name: str, key: str) -> int:
    """A signed 64-bit advisory lock id for (name, key), the same in every process."""
    digest = hashlib.blake2b(f"{name}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresTx(SqlTx):
    """`SqlTx` on a psycopg connection: %s placeholders, advisory locks, server-side cursors for big reads."""

    def __init__(self, conn: psycopg.Connection[Any], translate: Callable[[Exception], Exception],
                 column_types: dict[str, dict[str, str]] | None = None) -> None:
        """`column_types`: the store's cache of each table's column types (`_column_types`)."""
        super().__init__(conn, translate, placeholder="%s")
        self._pg = conn
        self._types = column_types if column_types is not None else {}

    # The database server's clock, so that leases mean the same on every host; clock_timestamp(), not now(): a
    # transaction that waited for a lock must not see the time it started.
    NOW_MS_SQL = "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"

    def lock(self, name: str, key: str) -> None:
        self.execute("SELECT pg_advisory_xact_lock(?)", (lock_id(name, key),))

    # Tally rows per connection (its backend pid): two processes issuing at once never wait on one counter row;
    # the rows of connections that are gone are folded into shard 0 by the leader (fold_certificate_tallies).
    _TALLY_SHARD = "pg_backend_pid()"
    _LOCK_READ_ROWS = " FOR UPDATE"
    _DEAD_SHARDS = "shard <> 0 AND shard NOT IN (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL)"

    def try_lock(self, name: str, key: str) -> bool:
        return bool(self._one("SELECT pg_try_advisory_xact_lock(?)", (lock_id(name, key),))[0])

    def insert_rows(self, table: str, columns: str, rows: Sequence[Sequence[Any]]) -> None:
        """All rows in one INSERT of one array per column (`INSERT ... SELECT * FROM unnest(...)`): executemany runs an
        INSERT per row, and the server's work per statement costs more CPU than the row itself (a batch of 100
        certificates writes 300 rows). The statement's text is the same whatever the number of rows, so psycopg
        converts it once and the server prepares it once per connection; a multi-row VALUES list (a longer text
        for each row count, 18 parameters a certificate) was converted by psycopg's query parser on every call
        (texts over 4 kB are not cached, nor prepared) and parsed and planned by the server every time: a fifth
        of an issuing process's CPU. The arrays go in binary (%b): psycopg writes them without quoting or hex, the
        server reads them without parsing text (measured: the recording transaction's client CPU per certificate
        from ~100 to ~36 us). One statement also goes into a pipeline (Store.transaction(pipelined=True)), which
        COPY cannot."""
        if not rows:
            return
        names = [name.strip() for name in columns.split(",")]
        types = self._column_types(table)
        arrays = ", ".join(f"%b::{types[name]}[]" for name in names)
        sql = f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays})"
        try:
            self._pg.cursor().execute(sql, [list(column) for column in zip(*rows, strict=True)])
        except Exception as exc:
            raise self._translate(exc) from exc

    def _column_types(self, table: str) -> dict[str, str]:
        """The SQL type of each column of `table` (for the array casts of `insert_rows`: an all-NULL column has no
        type of its own), read once per store."""
        types = self._types.get(table)
        if types is None:
            rows = self.execute(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                "WHERE a.attrelid = CAST(? AS regclass) AND a.attnum > 0 AND NOT a.attisdropped",
                (self._known_table(table),)).fetchall()
            types = self._types[table] = dict(rows)
        return types

    def notify(self, channel: str) -> None:
        # Delivered when (and only if) this transaction commits; one per commit and channel whatever the count.
        self.execute("SELECT pg_notify(?, '')", (channel,))

    _TABLES_SQL = ("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
                   "AND table_type = 'BASE TABLE' AND table_name <> 'schema_migrations' ORDER BY table_name")

    def loaded_table(self, table: str) -> None:
        """Move each identity column's sequence past the highest id loaded: the next row the engine inserts
        would otherwise take id 1 again and clash."""
        identities = self.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ? AND is_identity = 'YES'", (self._known_table(table),)).fetchall()
        for (column,) in identities:
            self.execute(f"SELECT setval(pg_get_serial_sequence(?, ?), COALESCE(MAX({column}), 0) + 1, false) "
                         f"FROM {table}", (table, column))

    def run_script(self, script: str) -> None:
        """Several statements at once (a migration file): the simple query protocol, no parameters."""
        try:
            self._pg.execute(script)
        except psycopg.Error as exc:
            raise self._translate(exc) from exc

    def _stream(self, sql: str, params: Sequence[Any], size: int) -> Iterator[list[Any]]:
        try:
            with self._pg.cursor(name=f"otpki_{uuid.uuid4().hex}") as cur:
                cur.itersize = size
                cur.execute(sql.replace("?", "%s"), tuple(params))
                while True:
                    rows = cur.fetchmany(size)
                    if not rows:
                        return
                    yield rows
        except psycopg.Error as exc:
            raise self._translate(exc) from exc


@dataclass
class _Open:
    """This thread's open unit of work: its connection, its transaction and how deeply it is nested."""

    conn: psycopg.Connection[Any]
    tx: PostgresTx
    writing: bool
    depth: int = 0


class PostgresStore:
    dialect: migrations.Dialect = "postgresql"

    def __init__(self, url: str, *, busy_timeout_s: float = 5.0, pool_size: int = 8, check_schema: bool = True,
                 connect_timeout_s: float = 10.0) -> None:
        """`url`: postgresql://user[:password]@host[:port]/database. `check_schema`: refuse (SchemaMismatch) a
        store whose schema is not this otpki's and create the schema in an empty database."""
        self.url = url
        self.where = redact(url)
        self._translate = _translate_for(self.where)
        lock_ms = max(1, int(busy_timeout_s * 1000))

        def configure(conn: psycopg.Connection[Any]) -> None:
            conn.execute(f"SET lock_timeout = {lock_ms}")
            conn.commit()

        try:
            # One connection first: a wrong database or password fails now with the server's own words, instead
            # of the pool retrying in the background until its timeout.
            psycopg.connect(url, connect_timeout=max(1, int(connect_timeout_s))).close()
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the database {self.where}: {_first_line(exc)}") from exc
        try:
            self._pool = psycopg_pool.ConnectionPool(
                url, min_size=1, max_size=max(1, pool_size), open=False, configure=configure,
                kwargs={"autocommit": False, "connect_timeout": max(1, int(connect_timeout_s))},
                timeout=connect_timeout_s + busy_timeout_s, name="otpki")
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise StoreError(f"cannot connect to the database {self.where}: {exc}") from exc
        self._local = threading.local()
        self._column_types: dict[str, dict[str, str]] = {}  # table -> column -> SQL type (PostgresTx.insert_rows)
        if check_schema:
            try:
                status = self.schema_status()
                if not status.empty and not status.current:
                    with self._upgrading():  # another instance may be half-way through its upgrade: let it end
                        status = self.schema_status()
                if status.empty:
                    self.upgrade()
                else:
                    status.check(self.where)
            except BaseException:
                self.close()
                raise

    # -- units of work ------------------------------------------------------------------------------------
    def _current(self) -> _Open | None:
        return getattr(self._local, "open", None)

    @contextmanager
    def _unit(self, *, writing: bool, pipelined: bool = False) -> Iterator[PostgresTx]:
        try:
            conn = self._pool.getconn()
        except psycopg_pool.PoolTimeout as exc:
            raise self._translate(exc) from exc
        unit = _Open(conn, PostgresTx(conn, self._translate, self._column_types), writing)
        try:
            conn.isolation_level = (psycopg.IsolationLevel.READ_COMMITTED if writing
                                    else psycopg.IsolationLevel.REPEATABLE_READ)
            conn.read_only = not writing
            self._local.open = unit
            if pipelined:
                # psycopg's pipeline mode: a statement goes out at once and its answer is read when a result is
                # fetched; the COMMIT goes with the statements still unanswered (one round trip for both).
                try:
                    with conn.pipeline():
                        yield unit.tx
                        conn.commit()
                except psycopg.Error as exc:  # an error of any statement of the block arrives here
                    self._rollback(conn)
                    raise self._translate(exc) from exc
                except BaseException:
                    self._rollback(conn)
                    raise
                return
            try:
                yield unit.tx
            except BaseException:
                self._rollback(conn)
                raise
            try:
                conn.commit()
            except psycopg.Error as exc:
                self._rollback(conn)
                raise self._translate(exc) from exc
        finally:
            self._local.open = None
            self._pool.putconn(conn)

    @staticmethod
    def _rollback(conn: psycopg.Connection[Any]) -> None:
        with contextlib.suppress(psycopg.Error):  # a broken connection: the pool discards it when it comes back
            conn.rollback()

    @contextmanager
    def transaction(self, *, pipelined: bool = False) -> Iterator[PostgresTx]:
        """A write unit of work; nested use is a savepoint inside the outer one (`pipelined` then has no effect)."""
        current = self._current()
        if current is None or not current.writing:
            # (A write inside a read of the same thread gets a connection of its own, as it would on SQLite, where
            # a read holds no transaction.)
            saved = current
            self._local.open = None
            try:
                with self._unit(writing=True, pipelined=pipelined) as tx:
                    yield tx
            finally:
                self._local.open = saved
            return
        current.depth += 1
        name = f"otpki_sp{current.depth}"
        try:
            current.tx.execute(f"SAVEPOINT {name}")
            try:
                yield current.tx
            except BaseException:
                with contextlib.suppress(StoreError):  # the connection is gone; the outer transaction fails with it
                    current.tx.execute(f"ROLLBACK TO SAVEPOINT {name}")
                raise
            current.tx.execute(f"RELEASE SAVEPOINT {name}")
        finally:
            current.depth -= 1

    @contextmanager
    def read(self) -> Iterator[PostgresTx]:
        current = self._current()
        if current is not None:
            yield current.tx  # inside a unit of work of this thread: read through it
            return
        with self._unit(writing=False) as tx:
            yield tx

    @contextmanager
    def snapshot(self) -> Iterator[PostgresTx]:
        """A read of its own (REPEATABLE READ: one snapshot for all its queries), even inside a unit of work."""
        saved = self._current()
        self._local.open = None
        try:
            with self._unit(writing=False) as tx:
                yield tx
        finally:
            self._local.open = saved

    def close(self) -> None:
        self._pool.close()

    # -- notifications ----------------------------------------------------------------------------------
    def subscribe(self, channel: str, callback: Callable[[], None]) -> PgSubscription:
        """LISTEN on `channel` on a connection of its own (trustlists.store.pg_listen)."""
        try:
            return PgSubscription(self.url, self.where, channel, callback)
        except psycopg.Error as exc:
            raise StoreError(f"cannot listen for changes on the database {self.where}: {_first_line(exc)}") from exc

    # -- schema ---------------------------------------------------------------------------------------------
    def schema_status(self) -> SchemaStatus:
        with self.read() as tx:
            tables = {row[0] for row in tx.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")}
            version = 0
            if "schema_migrations" in tables:
                version = tx.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
        return migrations.status(self.dialect, int(version), empty=not tables)

    def upgrade(self, record: Callable[[StoreWriter, list[Migration]], None] | None = None) -> list[Migration]:
        """Apply the pending migrations, each in its own transaction with its schema_migrations row; `record` runs
        in the last one's. Instances upgrading at once take turns on an advisory lock; the version is read again
        under it."""
        with self._upgrading():
            try:
                return self._upgrade(record)
            finally:
                self._column_types.clear()  # a migration may have changed a table

    @contextlib.contextmanager
    def _upgrading(self) -> Iterator[None]:
        """The whole-upgrade lock, held by a connection of its own (not the pool's: the upgrade needs those) for as
        long as the block runs."""
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the database {self.where}: {_first_line(exc)}") from exc
        with conn:
            try:
                conn.execute(f"SET lock_timeout = {_UPGRADE_WAIT_MS}")
                conn.execute("SELECT pg_advisory_lock(%s)", (_UPGRADING_LOCK,))
            except psycopg.Error as exc:
                raise self._translate(exc) from exc
            yield  # closing the connection releases the lock, also when the block raises

    def _upgrade(self, record: Callable[[StoreWriter, list[Migration]], None] | None) -> list[Migration]:
        applied: list[Migration] = []
        todo = [m for m in migrations.migrations(self.dialect) if m.version > self.schema_status().version]
        for n, migration in enumerate(todo):
            with self.transaction() as tx:
                tx.execute(f"SET LOCAL lock_timeout = {_UPGRADE_WAIT_MS}")
                tx.execute("SELECT pg_advisory_xact_lock(?)", (_UPGRADE_LOCK,))
                tx.execute(MIGRATIONS_TABLE_DDL)
                done = tx.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
                if migration.version <= done:
                    continue
                tx.run_script(migration.sql)
                tx.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                           (migration.version, migration.name, int(time.time())))
                applied.append(migration)
                if record is not None and n == len(todo) - 1:
                    record(tx, applied)
        return applied
