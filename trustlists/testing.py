"""Support for tests and benchmarks: engines on temporary directories, CSRs of every shape, a clock, free ports,
and waiting for a condition with a deadline.

Shared by `tests/` and `bench/` (which never imports `tests/`). Engine-only: no front is imported here; the
OPC UA helpers built on top of it are in `opcua_gds.testing`.

The "engine internals" helpers at the end reach behind `Engine`'s front door on purpose (seeding a million
revocations, counting transactions, signing a raw baseline with the CA's own key). They live here, inside the
engine package, so that nothing outside `trustlists/` touches the engine's context or store; product code never
calls them.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import os
import queue
import random
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO
from unittest import mock

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from trustlists import audit, authority
from trustlists.clock import utcnow
from trustlists.crl import build_crl
from trustlists.engine import Engine
from trustlists.hierarchy import publish_crl
from trustlists.keys.files import EncryptedFileKeyBackend
from trustlists.keys.keyring import KeyRing
from trustlists.leaf_encoding import LeafEncoder
from trustlists.models import CARecord, CrlRecord, RevocationReason
from trustlists.ocsp_responses import OcspResponder
from trustlists.policy import PkiConfig, load_default_config
from trustlists.secret_box import KEY_FILE
from trustlists.store import SqliteStore, StoreReader, StoreWriter, open_store
from trustlists.store.rows import CertificateCount
from trustlists.store.sql import _CERT_COLUMNS, SqlTx

# The certificates table's columns in INSERT order (the DER goes last): for benchmarks that fill an inventory
# of tens of thousands of rows with their own sqlite3 connection.
CERTIFICATE_COLUMNS = _CERT_COLUMNS

PASSPHRASE = b"correct horse battery staple"


_LOWEST_PICKED_PORT = 10000


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` right now, for servers that cannot bind port 0 and report it back (asyncua,
    Mosquitto) or whose port a test must know before they start.

    Picked at random below the kernel's ephemeral range (net.ipv4.ip_local_port_range). The port bind(0) hands
    out comes from that range, which is where every outgoing connection on the machine takes its local port too:
    one left unbound for the seconds before its server starts (a CLI run in between, on a loaded machine) was
    sometimes someone else's by then ("Address already in use" from Mosquitto). Below the range only callers of
    this function pick, at random among twenty thousand ports; under pytest-xdist each worker among its own share
    of them (`_picking_range`)."""
    return free_port_block(1, host)


def free_port_block(n: int, host: str = "127.0.0.1") -> int:
    """The first of `n` consecutive ports that are all free on `host` right now (a plant of PLCs binds them
    moments later), from where `free_port` picks: below the ephemeral range, at a random place."""
    first, end = _picking_range()
    if end - first < max(n, 1000):  # an ephemeral range that starts very low: no room below it
        if n == 1:
            with socket.socket() as s:
                s.bind((host, 0))
                return int(s.getsockname()[1])
        first, end = 1024, 65536
    for _ in range(200):
        base = random.randrange(first, end - n + 1)
        if all(_bindable(host, port) for port in range(base, base + n)):
            return base
    raise RuntimeError(f"no {n} consecutive free port(s) on {host} in {first}-{end - 1}")


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:  # in use (or lingering)
            return False
        return True


def _picking_range() -> tuple[int, int]:
    """[first, end): below the ephemeral range; under pytest-xdist, worker gwK of N takes the K-th of N equal
    shares, so two workers never pick the same port in the moment before its server binds it (the bind check
    sees only ports already bound)."""
    first, end = _LOWEST_PICKED_PORT, _ephemeral_low()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(worker[2:]) < int(count):
        share = (end - first) // int(count)
        first += int(worker[2:]) * share
        end = first + share
    return first, end


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; elsewhere the same range is a safe guess


class Clock:
    """A settable clock so tests can move through certificate lifetimes."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


def make_engine(directory: Path, *, config: PkiConfig | None = None, clock: Callable[[], datetime] | None = None,
                passphrase: bytes = PASSPHRASE, busy_timeout_s: float = 5.0, store_url: str | None = None,
                instance_id: str | None = None) -> Engine:
    """An engine with its CA keys in `directory`/keys and its store in `directory`/otpki.db, or at `store_url`
    (a PostgreSQL database) when given."""
    directory.mkdir(parents=True, exist_ok=True)
    store = (SqliteStore(directory / "otpki.db", busy_timeout_s=busy_timeout_s) if store_url is None
             else open_store(store_url, busy_timeout_s=busy_timeout_s))
    keys = KeyRing([EncryptedFileKeyBackend(directory / "keys", passphrase)])
    return Engine(store=store, config=config or load_default_config(), keys=keys, clock=clock or utcnow,
                  instance_id=instance_id, secrets_key_file=directory / KEY_FILE)


# -- initialised engines from templates ----------------------------------------------------------------------------
# Making a CA hierarchy is key generation (an RSA-4096 root with the default config): the slowest part of most
# engine fixtures. A template data directory is initialised once per process for each (config, passphrase, actor)
# and copied for every engine asked for; a copy of an SQLite file and a few encrypted key files costs milliseconds.
# Every copy holds the same CA keys, so a test that needs a CA hierarchy *different* from its engine's (a foreign
# CA, another plant) takes `foreign_engine`, whose template is a second one; a test that needs two foreign
# hierarchies different from each other makes the second with make_engine + initialize.

_DB_FILE = "otpki.db"
_KEYS_DIR = "keys"
# The templates' clock runs a minute behind: the CAs, CRLs and audit records they hold are older than anything a
# test's clock (made after the template, or a moment before it) stamps, so "newest" stays the test's.
_TEMPLATE_AGE = timedelta(minutes=1)
_templates: dict[tuple[str, bytes, str, str], Path] = {}
_templates_lock = threading.Lock()
_templates_root: Path | None = None


def _template(config: PkiConfig, passphrase: bytes, actor: str, lineage: str) -> Path:
    global _templates_root
    key = (config.model_dump_json(), passphrase, actor, lineage)
    with _templates_lock:
        if key in _templates:
            return _templates[key]
        if _templates_root is None:
            _templates_root = Path(tempfile.mkdtemp(prefix="otpki-engine-templates-"))
            atexit.register(shutil.rmtree, _templates_root, ignore_errors=True)
        directory = _templates_root / str(len(_templates))
        made_at = utcnow() - _TEMPLATE_AGE
        engine = make_engine(directory, config=config, clock=lambda: made_at, passphrase=passphrase)
        try:
            engine.hierarchy.initialize(actor=actor)
        finally:
            engine.close()  # the last connection checkpoints the WAL: the database is one file again
        _templates[key] = directory
        return directory


def initialized_engine(directory: Path, *, config: PkiConfig | None = None,
                       clock: Callable[[], datetime] | None = None, passphrase: bytes = PASSPHRASE,
                       busy_timeout_s: float = 5.0, actor: str = "test") -> Engine:
    """What `make_engine(directory, ...)` followed by `engine.hierarchy.initialize(actor=actor)` gives, from a copy
    of a template initialised once per process. `directory` must not hold a data directory yet."""
    return _copied_engine(directory, "ours", config=config, clock=clock, passphrase=passphrase,
                          busy_timeout_s=busy_timeout_s, actor=actor)


def foreign_engine(directory: Path, *, config: PkiConfig | None = None, actor: str = "test") -> Engine:
    """An initialised engine whose CA hierarchy is none of `initialized_engine`'s: another plant, a CA the engine
    under test never issued from. From a template of its own, like `initialized_engine`."""
    return _copied_engine(directory, "foreign", config=config, clock=None, passphrase=PASSPHRASE,
                          busy_timeout_s=5.0, actor=actor)


def _copied_engine(directory: Path, lineage: str, *, config: PkiConfig | None,
                   clock: Callable[[], datetime] | None, passphrase: bytes, busy_timeout_s: float,
                   actor: str) -> Engine:
    config = config or load_default_config()
    template = _template(config, passphrase, actor, lineage)
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / _DB_FILE).exists() or (directory / _KEYS_DIR).exists():
        raise FileExistsError(f"{directory} already holds an engine's data")
    shutil.copytree(template / _KEYS_DIR, directory / _KEYS_DIR)  # copy2 per file: the 0600 modes stay
    shutil.copy2(template / _DB_FILE, directory / _DB_FILE)
    return make_engine(directory, config=config, clock=clock, passphrase=passphrase, busy_timeout_s=busy_timeout_s)


# -- waiting with a deadline ----------------------------------------------------------------------------------------

def wait_until(condition: Callable[[], object], what: str, *, timeout: float = 20.0, interval: float = 0.02) -> None:
    """Poll `condition` until it holds; AssertionError naming `what` once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


async def eventually(condition: Callable[[], object], what: str, *, timeout: float = 20.0,
                     interval: float = 0.02) -> None:
    """`wait_until` for coroutines: the event loop keeps running between polls."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


def read_line_until(stream: IO[str], done: Callable[[str], bool], what: str, *, timeout: float = 60.0) -> str:
    """Read a child process's output up to the first line for which `done` holds, and return it ("" when the
    output ends first, as `readline` does). A reader thread does the blocking reads, so a child that goes silent
    fails the test after `timeout` seconds instead of hanging it; the thread ends when the child's pipe closes."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in iter(stream.readline, ""):
            lines.put(line)
            if done(line):
                return  # later output stays in the pipe for the test
        lines.put("")

    threading.Thread(target=pump, daemon=True, name=f"read-until {what}").start()
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; read so far: {''.join(seen)!r}")
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        if line == "" or done(line):
            return line
        seen.append(line)


def new_key(kind: str = "ec-p256") -> ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey:
    if kind == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(65537, int(kind.removeprefix("rsa")))


def make_csr(cn: str, *, uris: list[str] | None = None, dns: list[str] | None = None,
             key: CertificateIssuerPrivateKeyTypes | None = None, ca: bool = False, pem: bool = True) -> bytes:
    key = key or new_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris or []]
    names += [x509.DNSName(d) for d in dns or []]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = builder.sign(key, algorithm)
    return csr.public_bytes(serialization.Encoding.PEM if pem else serialization.Encoding.DER)


def make_subject_csr(attributes: list[tuple[x509.ObjectIdentifier, str]], *, uris: list[str] | None = None,
                     dns: list[str] | None = None, pem: bool = True) -> bytes:
    """A CSR with any subject, over-long values included, as a device or an attacker may send it."""
    name = x509.Name([x509.NameAttribute(oid, value, _validate=False) for oid, value in attributes])
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    general: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris or []]
    general += [x509.DNSName(d) for d in dns or []]
    if general:
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    csr = builder.sign(new_key(), hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM if pem else serialization.Encoding.DER)


def store_snapshot(engine: Engine) -> tuple[int, int, int, int]:
    """Counts that must not move when a request is refused: certificates, audit records, CRLs, owners."""
    with engine._ctx.store.read() as tx:
        certs, audit, crls, owners = (int(sql(tx).execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
                                      for table in ("certificates", "audit_log", "crls", "owners"))
    return certs, audit, crls, owners


def sql(tx: StoreReader | StoreWriter) -> SqlTx:
    """The SQL transaction behind a store transaction: for tests that tamper with rows or count them, in SQL both
    backends accept (`?` placeholders)."""
    if not isinstance(tx, SqlTx):
        raise TypeError(f"not an SQL store transaction: {type(tx).__name__}")
    return tx


# -- engine internals (tests and benchmarks only) --------------------------------------------------------------
def scanned_counts(engine: Engine) -> list[CertificateCount]:
    """The overview's counts per group, site and state from one GROUP BY over every certificate (the tallies'
    oracle)."""
    with engine._ctx.store.read() as tx:
        return tx.certificate_counts_scanned(engine.now())


def count_table_rows(engine: Engine, table: str) -> int:
    with engine._ctx.store.read() as tx:
        return tx.count_rows(table)


def recount_certificate_tallies(engine: Engine) -> None:
    """The certificate tallies counted again from the certificates: after rows were written behind the store
    (benchmarks that fill the table directly)."""
    with engine._ctx.store.transaction() as tx:
        tx.rebuild_certificate_tallies()


def ca_signing_material(engine: Engine, ca: CARecord) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    """The CA's parsed certificate and its key as the engine signs with them: a benchmark's raw baseline signs
    with the very same key."""
    return engine._ctx.ca_certificate(ca), engine._ctx.keys.signer(ca)


def insert_revocations(engine: Engine, rows: Sequence[tuple[str, str, int, int, int]]) -> None:
    """(serial hex, issuer CA id, revoked_at epoch, reason, not_after epoch) rows straight into the store, in one
    transaction, without certificates, CRLs or audit records: a large CRL's worth of setup."""
    with engine._ctx.store.transaction() as tx:
        sql(tx).executemany("INSERT INTO revocations (serial, issuer_ca_id, revoked_at, reason, not_after) "
                       "VALUES (?, ?, ?, ?, ?)", rows)


def build_crl_from_store(engine: Engine, ca: CARecord, key: CertificateIssuerPrivateKeyTypes, *, hash_name: str,
                         crl_days: int, now: datetime) -> tuple[x509.CertificateRevocationList, int]:
    """What `publish_crl` signs, without storing it: the store's revocations of `ca` read and built into a CRL."""
    with engine._ctx.store.read() as tx:
        return build_crl(issuer_cert=engine._ctx.ca_certificate(ca), issuer_key=key, issuer_key_type=ca.key_type,
                         hash_name=hash_name, crl_number=tx.next_crl_number(ca.id), this_update=now,
                         next_update=now + timedelta(days=crl_days), entries=tx.revoked_entries(ca.id, now))


def revoked_entries(engine: Engine, ca_id: str, now: datetime) -> list[tuple[str, int, int]]:
    """The rows `build_crl` is fed for `ca_id`, fetched into a list."""
    with engine._ctx.store.read() as tx:
        return list(tx.revoked_entries(ca_id, now))


def publish_crl_now(engine: Engine, ca: CARecord, key: CertificateIssuerPrivateKeyTypes, *, crl_days: int,
                    hash_name: str, actor: str) -> CrlRecord:
    """`publish_crl` in its own transaction (build, store, audit), outside any revocation."""
    with engine._ctx.store.transaction() as tx:
        return publish_crl(engine._ctx, tx, ca, key, crl_days=crl_days, hash_name=hash_name, actor=actor)


def fill_revocation_index(engine: Engine, ca_id: str, serials: Sequence[int],
                          reason: RevocationReason = RevocationReason.KEY_COMPROMISE) -> None:
    """Entries in the live revocation index only (the store never hears of them): its size under a big CRL."""
    for serial in serials:
        engine._ctx.index.add(ca_id, serial, int(reason))


def revocation_index_size(engine: Engine) -> int:
    return len(engine._ctx.index)


@contextlib.contextmanager
def counting_writes(engine: Engine) -> Iterator[list[int]]:
    """Counts the write transactions the engine opens while inside (nested ones included): `count[0]`."""
    store = engine._ctx.store
    real = store.transaction
    count = [0]

    @contextlib.contextmanager
    def counted() -> Iterator[StoreWriter]:
        count[0] += 1
        with real() as tx:
            yield tx

    # patch.object puts the store's own method back however the block ends.
    with mock.patch.object(store, "transaction", counted):
        yield count


@contextlib.contextmanager
def store_refuses(engine: Engine, *, table: str, operation: str = "UPDATE") -> Iterator[None]:
    """While inside, the store refuses every `operation` (INSERT, UPDATE, DELETE) on `table`: a real SQLite
    trigger, added through a second connection to the engine's database file, that aborts the statement. For
    tests of what a failure halfway through a transaction leaves behind."""
    if operation not in ("INSERT", "UPDATE", "DELETE") or not table.isidentifier():
        raise ValueError(f"cannot make a trigger for {operation} on {table!r}")
    store = engine._ctx.store
    if not isinstance(store, SqliteStore):
        raise TypeError(f"store_refuses needs a SQLite store, not {type(store).__name__}")
    path = store.path
    name = f"otpki_test_refuse_{operation.lower()}_{table}"
    with contextlib.closing(sqlite3.connect(str(path), timeout=30)) as conn:
        conn.execute(f"CREATE TRIGGER {name} BEFORE {operation} ON {table} "
                     f"BEGIN SELECT RAISE(ABORT, 'the test made the store refuse {operation} on {table}'); END")
        conn.commit()
    try:
        yield
    finally:
        with contextlib.closing(sqlite3.connect(str(path), timeout=30)) as conn:
            conn.execute(f"DROP TRIGGER IF EXISTS {name}")
            conn.commit()


# -- a throwaway PostgreSQL cluster (tests and benchmarks of the PostgreSQL store) --------------------------------
class PostgresCluster:
    """A PostgreSQL cluster of its own in a temporary directory: initdb, then a postmaster on 127.0.0.1 at a port
    the OS handed out, stopped and deleted by `stop`. Run as the `postgres` system user when we are root
    (PostgreSQL refuses to run as root). Durability is off (fsync, synchronous_commit): nothing here outlives the
    test run; a benchmark that measures commits makes its own settings.

    `database()` creates an empty database and returns its URL: one per test module or test.
    `PostgresCluster.running(url)` is a cluster another process started and stops (one shared by several programs).
    """

    def __init__(self, *, settings: dict[str, str] | None = None) -> None:
        self._settings = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                          "max_connections": "200", **(settings or {})}
        self.base: Path | None = None
        self.port = 0
        self._databases = 0
        self._owned = True
        self._database_tag = ""

    @classmethod
    def running(cls, url: str) -> PostgresCluster:
        """The cluster at `url` (the `url()` of a cluster another process started, and will stop): `database()`
        makes databases on it that no other user of the cluster names alike, `stop()` leaves it running. Its
        settings are the ones it was started with."""
        import os
        from urllib.parse import urlsplit

        import psycopg

        port = urlsplit(url).port
        if port is None:
            raise ValueError(f"{url!r} names no port")
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
        assert row is not None
        cluster = cls()
        cluster.port = port
        cluster.base = Path(row[0]).parent  # start() keeps the data in <base>/data
        cluster._owned = False
        cluster._database_tag = f"_{os.getpid()}"  # the owner's counter runs in another process
        return cluster

    @staticmethod
    def bindir() -> Path:
        """Where initdb and pg_ctl are: PATH first, then Debian's /usr/lib/postgresql/<version>/bin."""
        import shutil

        found = shutil.which("pg_ctl")
        if found:
            return Path(found).resolve().parent
        candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                            key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
        if not candidates:
            raise RuntimeError("PostgreSQL is not installed (no pg_ctl): run scripts/setup.sh")
        return candidates[-1].parent

    def _run(self, *args: str) -> None:
        import os
        import subprocess

        command = [str(self.bindir() / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")

    def start(self) -> PostgresCluster:
        import os
        import shutil
        import tempfile

        base = Path(tempfile.mkdtemp(prefix="otpki-pg-"))
        self.base = base
        if os.geteuid() == 0:
            shutil.chown(base, "postgres", "postgres")
        base.chmod(0o700)
        self._run("initdb", "-D", str(base / "data"), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                  "--locale=C", "--no-sync")
        options = " ".join(f"-c {k}={v}" for k, v in self._settings.items())
        for _attempt in range(3):  # the port is free when we ask; another process may take it before we bind
            self.port = free_port()
            try:
                self._run("pg_ctl", "-D", str(base / "data"), "-l", str(base / "postgres.log"), "-w", "-t", "60",
                          "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {base} {options}", "start")
                return self
            except RuntimeError:
                if "could not bind" not in self.log():
                    raise
        raise RuntimeError(f"PostgreSQL did not start: {self.log()[-2000:]}")

    def log(self) -> str:
        assert self.base is not None
        try:
            return (self.base / "postgres.log").read_text(errors="replace")
        except OSError:
            return ""

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def database(self, prefix: str = "otpki") -> str:
        """A new, empty database; its URL."""
        import psycopg

        self._databases += 1
        name = f"{prefix}{self._database_tag}_{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def stop(self) -> None:
        import shutil

        if self.base is None or not self._owned:
            self.base = None
            return
        try:
            if (self.base / "data" / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.base / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None


@dataclass
class StageTimes:
    """Seconds of thread CPU time and of wall time spent in each stage of issuance, summed over the calls."""

    cpu: dict[str, float] = field(default_factory=dict)
    wall: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def add(self, stage: str, cpu: float, wall: float) -> None:
        self.cpu[stage] = self.cpu.get(stage, 0.0) + cpu
        self.wall[stage] = self.wall.get(stage, 0.0) + wall
        self.calls[stage] = self.calls.get(stage, 0) + 1


# (stage, object, attribute): the functions `CertificateAuthority.issue_many` spends its time in.
_ISSUANCE_STAGES: list[tuple[str, object, str]] = [
    ("csr load", authority, "load_csr"),
    ("csr signature", authority, "verify_csr_signature"),
    ("csr rules", authority, "check_verified_csr"),
    ("build", authority, "leaf_fields"),
    ("build", LeafEncoder, "tbs"),
    ("draft", authority.CertificateAuthority, "_draft"),
    ("sign", authority.CertificateAuthority, "_sign"),
    ("record values", authority.CertificateAuthority, "_record"),
    ("sql insert", SqlTx, "insert_certificates"),
    ("audit", audit, "append_many"),
    ("record", authority.CertificateAuthority, "_commit"),
    ("issue_many", authority.CertificateAuthority, "issue_many"),
]


@contextlib.contextmanager
def issuance_stages() -> Iterator[StageTimes]:
    """While inside, time every stage of `issue_many` (inclusive: "draft" contains "build", "record" (the
    transaction, commit included) contains "sql insert" and "audit").
    Each wrapped call costs 1-2 us of its own (four clock reads): for a profile, not for the benchmark's figures."""
    times = StageTimes()

    def timed(stage: str, fn: Callable[..., object]) -> Callable[..., object]:
        @functools.wraps(fn)
        def wrapper(*args: object, **kwargs: object) -> object:
            cpu, wall = time.thread_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times.add(stage, time.thread_time() - cpu, time.perf_counter() - wall)
        return wrapper

    with contextlib.ExitStack() as patches:
        for stage, owner, name in _ISSUANCE_STAGES:
            patches.enter_context(mock.patch.object(owner, name, timed(stage, getattr(owner, name))))
        yield times


def ocsp_responder(engine: Engine, **settings: object) -> OcspResponder:
    """A second OCSP responder on the engine's store, index and signers, with its own settings (a stepped
    `monotonic` clock, intervals): what tests and benchmarks compare the engine's own responder against."""
    return OcspResponder(engine._ctx, engine.ocsp_signers, **settings)  # type: ignore[arg-type]  # the caller's keywords
