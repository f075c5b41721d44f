"""Support for tests and benchmarks: engines on temporary directories, CSRs of every shape, a clock, free ports,
and waiting for a condition with a deadline.

Shared by `tests/` and `bench/` (which never imports `tests/`). Engine-only: no front is imported here; the
OPC UA helpers built on top of it are in `opcua_gds.testing`.
"""

from __future__ import annotations

import asyncio
import atexit
import queue
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from trustlists.clock import utcnow
from trustlists.engine import Engine
from trustlists.keys.files import EncryptedFileKeyBackend
from trustlists.keys.keyring import KeyRing
from trustlists.policy import PkiConfig, load_default_config
from trustlists.store import SqliteStore

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
                passphrase: bytes = PASSPHRASE, busy_timeout_s: float = 5.0) -> Engine:
    directory.mkdir(parents=True, exist_ok=True)
    store = SqliteStore(directory / "otpki.db", busy_timeout_s=busy_timeout_s)
    keys = KeyRing([EncryptedFileKeyBackend(directory / "keys", passphrase)])
    kwargs = {"clock": clock} if clock else {}
    return Engine(store=store, config=config or load_default_config(), keys=keys, **kwargs)


# -- initialised engines from templates ----------------------------------------------------------------------------
# Making a CA hierarchy is key generation (an RSA-4096 root with the default config): the slowest part of most
# engine fixtures. A template data directory is initialised once per process for each (config, passphrase, actor)
# and copied for every engine asked for; a copy of an SQLite file and a few encrypted key files costs milliseconds.
# Every copy holds the same CA keys, so a test that needs a CA hierarchy *different* from its engine's (a foreign
# CA, a second site) must make that one with make_engine + initialize.

_DB_FILE = "otpki.db"
_KEYS_DIR = "keys"
# The templates' clock runs a minute behind: the CAs, CRLs and audit records they hold are older than anything a
# test's clock (made after the template, or a moment before it) stamps, so "newest" stays the test's.
_TEMPLATE_AGE = timedelta(minutes=1)
_templates: dict[tuple[str, bytes, str], Path] = {}
_templates_lock = threading.Lock()
_templates_root: Path | None = None


def _template(config: PkiConfig, passphrase: bytes, actor: str) -> Path:
    global _templates_root
    key = (config.model_dump_json(), passphrase, actor)
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
    config = config or load_default_config()
    template = _template(config, passphrase, actor)
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


def new_key(kind: str = "ec-p256"):  # type: ignore[no-untyped-def]
    if kind == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(65537, int(kind.removeprefix("rsa")))


def make_csr(cn: str, *, uris: list[str] | None = None, dns: list[str] | None = None, key=None,  # type: ignore[no-untyped-def]
             ca: bool = False, pem: bool = True) -> bytes:
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
    with engine.ctx.store.read() as tx:
        certs = tx.execute("SELECT COUNT(*) FROM certificates").fetchone()[0]
        audit = tx.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
        crls = tx.execute("SELECT COUNT(*) FROM crls").fetchone()[0]
        owners = tx.execute("SELECT COUNT(*) FROM owners").fetchone()[0]
    return certs, audit, crls, owners
