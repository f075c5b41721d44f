"""A node-opcua push-management peer (tests/interop/node_opcua/push_server.js) on a free loopback port.

The peer's certificate manager never accepts unknown certificates, so before starting it the fixture
pre-seeds its PKI folder: the otpki client's engine-issued certificate goes into application/trusted/certs,
the engine's CA certificates into application/issuers/certs and their CRLs into application/issuers/crl.

node_modules must be installed (``bash scripts/setup.sh`` runs ``npm ci``); if it is missing the fixture
fails instead of skipping, so CI cannot go green without the peer.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from opcua_gds.testing import AppIdentity, issue_app_identity
from trustlists.engine import Engine
from trustlists.testing import free_port, initialized_engine

NODE_DIR = Path(__file__).parent / "node_opcua"
PUSH_SERVER = NODE_DIR / "push_server.js"
READY_TIMEOUT_S = 60.0
PEER_APP_URI = "urn:otpki:interop:node-opcua-push-server"
CLIENT_APP_URI = "urn:otpki:interop:push-client"
ADMIN = ("admin", "admin-pw")  # SecurityAdmin
OPERATOR = ("operator", "operator-pw")  # no SecurityAdmin
OPCUA_GROUP = "opcua-application"


@dataclass
class NodePeer:
    endpoint: str
    port: int
    pki: Path
    engine: Engine
    client: AppIdentity
    log: Path
    server_certificate_der: bytes  # the peer's own (self-signed) certificate, read from its PKI folder

    @property
    def server_sha256(self) -> str:
        """What an operator would read off the device and pin (`otpki targets add --server-sha256`)."""
        return hashlib.sha256(self.server_certificate_der).hexdigest()


def _seed_pki(pki: Path, engine: Engine, client: AppIdentity) -> None:
    app = pki / "application"
    for sub in ("trusted/certs", "trusted/crl", "issuers/certs", "issuers/crl", "rejected", "own/certs",
                "own/private"):
        (app / sub).mkdir(parents=True, exist_ok=True)
    (app / "trusted/certs" / f"{client.name}.der").write_bytes(client.cert_der)
    content = engine.trustlists.get(OPCUA_GROUP).content
    for i, der in enumerate(content.trusted_certificates + content.issuer_certificates):
        (app / "issuers/certs" / f"ca{i}.der").write_bytes(der)
    for i, der in enumerate(content.trusted_crls + content.issuer_crls):
        (app / "issuers/crl" / f"ca{i}.crl").write_bytes(der)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def peer_own_identity(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the peer's own certificate and key are kept once node-opcua has made them (on the first start in the
    session): generating them is half of a peer's start. Each peer gets a copy in its own PKI folder."""
    return tmp_path_factory.mktemp("node-peer-own")


def _copy_own(source: Path, destination: Path) -> None:
    # node-opcua's lock files are its own, per process.
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("*.mutex", "*.lock"), dirs_exist_ok=True)


@pytest.fixture
def node_peer(tmp_path: Path, peer_own_identity: Path) -> Iterator[NodePeer]:
    if not (NODE_DIR / "node_modules" / "node-opcua-server-configuration").is_dir():
        pytest.fail(f"node-opcua is not installed in {NODE_DIR}: run `bash scripts/setup.sh` "
                    "(npm ci --prefix tests/interop/node_opcua)")
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the node-opcua interop peer needs Node.js 20")

    engine = initialized_engine(tmp_path / "engine")
    client = issue_app_identity(engine, tmp_path / "client", "otpki-push-client", CLIENT_APP_URI)
    pki = tmp_path / "peer-pki"
    _seed_pki(pki, engine, client)
    own_made_here = not (peer_own_identity / "certs" / "certificate.pem").exists()
    if not own_made_here:
        _copy_own(peer_own_identity, pki / "application" / "own")

    port = free_port()
    log = tmp_path / "push_server.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [node, str(PUSH_SERVER), "--port", str(port), "--pki", str(pki), "--app-uri", PEER_APP_URI],
            cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=stderr, start_new_session=True)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.put(raw.decode(errors="replace").rstrip())

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or proc.poll() is not None:
                pytest.fail(f"node-opcua peer did not become READY (exit {proc.poll()}):\n{log.read_text()[-4000:]}")
            try:
                line = lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if line.startswith("READY "):
                break
        if own_made_here:
            _copy_own(pki / "application" / "own", peer_own_identity)
        own = x509.load_pem_x509_certificate((pki / "application" / "own" / "certs" / "certificate.pem").read_bytes())
        yield NodePeer(endpoint=f"opc.tcp://127.0.0.1:{port}", port=port, pki=pki, engine=engine, client=client,
                       log=log, server_certificate_der=own.public_bytes(Encoding.DER))
    finally:
        _stop(proc)
        engine.close()
