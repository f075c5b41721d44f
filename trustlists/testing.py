"""Support for tests and benchmarks: engines on temporary directories, CSRs of every shape, a clock, free ports.

Shared by `tests/` and `bench/` (which never imports `tests/`). Engine-only: no front is imported here; the
OPC UA helpers built on top of it are in `opcua_gds.testing`.

The "engine internals" helpers at the end reach behind `Engine`'s front door on purpose (seeding a million
revocations, counting transactions, signing a raw baseline with the CA's own key). They live here, inside the
engine package, so that nothing outside `trustlists/` touches the engine's context or store; product code never
calls them.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from unittest import mock

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from trustlists.clock import utcnow
from trustlists.crl import build_crl
from trustlists.engine import Engine
from trustlists.hierarchy import publish_crl
from trustlists.keys.files import EncryptedFileKeyBackend
from trustlists.keys.keyring import KeyRing
from trustlists.models import CARecord, CrlRecord, RevocationReason
from trustlists.policy import PkiConfig, load_default_config
from trustlists.store import SqliteStore, StoreReader, StoreWriter, open_store
from trustlists.store.sql import _CERT_COLUMNS, SqlTx

# The certificates table's columns in INSERT order (the DER goes last): for benchmarks that fill an inventory
# of tens of thousands of rows with their own sqlite3 connection.
CERTIFICATE_COLUMNS = _CERT_COLUMNS

PASSPHRASE = b"correct horse battery staple"


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS just handed out on `host`, for servers that cannot bind port 0 and report it back
    (asyncua, Mosquitto) or whose port a test must know before they start."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Clock:
    """A settable clock so tests can move through certificate lifetimes."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


def make_engine(directory: Path, *, config: PkiConfig | None = None, clock: Callable[[], datetime] | None = None,
                passphrase: bytes = PASSPHRASE, busy_timeout_s: float = 5.0, store_url: str | None = None) -> Engine:
    """An engine with its CA keys in `directory`/keys and its store in `directory`/otpki.db, or at `store_url`
    (a PostgreSQL database) when given."""
    directory.mkdir(parents=True, exist_ok=True)
    store = (SqliteStore(directory / "otpki.db", busy_timeout_s=busy_timeout_s) if store_url is None
             else open_store(store_url, busy_timeout_s=busy_timeout_s))
    keys = KeyRing([EncryptedFileKeyBackend(directory / "keys", passphrase)])
    return Engine(store=store, config=config or load_default_config(), keys=keys, clock=clock or utcnow)


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
    """

    def __init__(self, *, settings: dict[str, str] | None = None) -> None:
        self._settings = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                          "max_connections": "200", **(settings or {})}
        self.base: Path | None = None
        self.port = 0
        self._databases = 0

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
        name = f"{prefix}_{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def stop(self) -> None:
        import shutil

        if self.base is None:
            return
        try:
            if (self.base / "data" / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.base / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None
