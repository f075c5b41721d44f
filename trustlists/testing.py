"""Support for tests and benchmarks: engines on temporary directories, CSRs of every shape, a clock, free ports.

Shared by `tests/` and `bench/` (which never imports `tests/`). Engine-only: no front is imported here; the
OPC UA helpers built on top of it are in `opcua_gds.testing`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

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
