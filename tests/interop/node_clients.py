"""Driving node-opcua client scripts (tests/interop/node_opcua/*.js) from pytest: identities, PKI, processes.

- `NodeClientIdentity`: an engine-issued application certificate for the node-opcua client, as PEM files, and a
  client PKI folder (node-opcua's layout) holding exactly what the test says to trust.
- `run_script`: a one-shot script that prints one line "RESULT <json>".
- `EventWatcher`: event_watch.js as a context manager; `wait_for(predicate)` polls its events with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from opcua_gds.testing import issue_app_identity
from tests.interop.conftest import NODE_DIR, _stop
from trustlists.engine import Engine
from trustlists.models import TrustListContent

SCRIPT_TIMEOUT_S = 120.0
READY_TIMEOUT_S = 60.0
EVENT_TIMEOUT_S = 30.0


def node_executable() -> str:
    if not (NODE_DIR / "node_modules" / "node-opcua").is_dir():
        pytest.fail(f"node-opcua is not installed in {NODE_DIR}: run `bash scripts/setup.sh`")
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the node-opcua interop clients need Node.js 20")
    return node


def _pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)


@dataclass(frozen=True)
class NodeClientIdentity:
    application_uri: str
    cert_pem: Path
    key_pem: Path
    cert_der: bytes
    pki: Path

    def args(self, endpoint: str) -> list[str]:
        return ["--endpoint", endpoint, "--pki", str(self.pki), "--cert", str(self.cert_pem), "--key",
                str(self.key_pem), "--app-uri", self.application_uri]


def node_client_identity(engine: Engine, directory: Path, name: str, uri: str, *, trust: TrustListContent,
                         extra_trusted: Sequence[bytes] = ()) -> NodeClientIdentity:
    """An engine-issued client identity; its PKI trusts `trust` (an OPC UA trust list) and `extra_trusted`."""
    app = issue_app_identity(engine, directory / "identity", name, uri)
    cert_pem = directory / f"{name}.cert.pem"
    cert_pem.write_bytes(_pem(app.cert_der))
    pki = directory / "pki"
    folders = {"trusted/certs": [*trust.trusted_certificates, *extra_trusted], "trusted/crl": trust.trusted_crls,
               "issuers/certs": trust.issuer_certificates, "issuers/crl": trust.issuer_crls}
    for sub in ("own/certs", "own/private", "rejected", *folders):
        (pki / sub).mkdir(parents=True, exist_ok=True)
    for sub, items in folders.items():
        for i, der in enumerate(items):
            (pki / sub / f"{i}.{'crl' if sub.endswith('crl') else 'der'}").write_bytes(der)
    return NodeClientIdentity(uri, cert_pem, app.key_path, app.cert_der, pki)


async def run_script(script: str, args: list[str], log: Path) -> dict[str, Any]:
    """Run a node-opcua script to its end (in a thread: the server under test runs on this event loop); its stdout
    is one JSON object."""
    with log.open("wb") as stderr:
        done = await asyncio.to_thread(
            subprocess.run, [node_executable(), str(NODE_DIR / script), *args], cwd=NODE_DIR, stdout=subprocess.PIPE,
            stderr=stderr, timeout=SCRIPT_TIMEOUT_S, check=False)
    if done.returncode != 0:
        pytest.fail(f"{script} exited {done.returncode}:\n{log.read_text()[-4000:]}")
    results = [line for line in done.stdout.decode().splitlines() if line.startswith("RESULT ")]
    if len(results) != 1:  # node-opcua writes warnings to stdout too: the answer is the one RESULT line
        pytest.fail(f"{script} printed {len(results)} RESULT lines:\n{done.stdout.decode()[-3000:]}")
    result: dict[str, Any] = json.loads(results[0][len("RESULT "):])
    return result


@dataclass
class EventWatcher:
    """A running event_watch.js: what it printed, event by event."""

    process: subprocess.Popen[bytes]
    log: Path
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    events: list[dict[str, Any]] = field(default_factory=list)
    keepalives: int = 0

    async def _drain(self, timeout: float) -> None:
        """Take the next line, waiting at most `timeout` in a thread (the server under test runs on this loop)."""
        try:
            line = await asyncio.to_thread(self.lines.get, timeout=timeout)
        except queue.Empty:
            return
        if line.startswith("EVENT "):
            self.events.append(json.loads(line[len("EVENT "):]))
        elif line == "KEEPALIVE":
            self.keepalives += 1

    async def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], what: str,
                       timeout: float = EVENT_TIMEOUT_S) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not predicate(self.events):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.process.poll() is not None:
                pytest.fail(f"event_watch did not see {what} (exit {self.process.poll()}); it saw {self.events}\n"
                            f"{self.log.read_text()[-3000:]}")
            await self._drain(min(remaining, 0.2))
        return self.events

    async def wait_for_keepalives(self, count: int, timeout: float = EVENT_TIMEOUT_S) -> None:
        """Publish cycles that carried no notification: after them, nothing more is queued for this client."""
        start = self.keepalives
        deadline = time.monotonic() + timeout
        while self.keepalives < start + count:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.process.poll() is not None:
                pytest.fail(f"event_watch saw no keep-alive (exit {self.process.poll()})\n"
                            f"{self.log.read_text()[-3000:]}")
            await self._drain(min(remaining, 0.2))


@asynccontextmanager
async def event_watcher(identity: NodeClientIdentity, endpoint: str, fields: Sequence[str], log: Path, *,
                        user: tuple[str, str] | None = None,
                        publishing_interval_ms: int = 50) -> AsyncIterator[EventWatcher]:
    args = [*identity.args(endpoint), "--fields", ",".join(fields), "--publishing-interval",
            str(publishing_interval_ms)]
    if user is not None:
        args += ["--user", user[0], "--password", user[1]]
    with log.open("wb") as stderr:
        process = subprocess.Popen([node_executable(), str(NODE_DIR / "event_watch.js"), *args], cwd=NODE_DIR,
                                   stdout=subprocess.PIPE, stderr=stderr, start_new_session=True)
    watcher = EventWatcher(process, log)

    def pump() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            watcher.lines.put(raw.decode(errors="replace").rstrip())

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or process.poll() is not None:
                pytest.fail(f"event_watch did not become READY (exit {process.poll()}):\n{log.read_text()[-4000:]}")
            try:
                if await asyncio.to_thread(watcher.lines.get, timeout=min(remaining, 0.5)) == "READY":
                    break
            except queue.Empty:
                continue
        yield watcher
    finally:
        _stop(process)
