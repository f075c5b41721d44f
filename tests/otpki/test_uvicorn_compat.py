"""Contract tests of otpki/web/_uvicorn_compat.py against the real uvicorn: each item the gate relies on.

A real uvicorn server on 127.0.0.1 port 0 with the engine-issued listener identity (otpki.web.tls), curl as the
client: the app sees the ASGI TLS extension with the client certificate curl sent, an empty chain when it sent
none, a certificate of a foreign CA is refused in the handshake and reported with the peer's address and
OpenSSL's reason, and the process's signal handlers are left to the supervisor.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from otpki.web import _uvicorn_compat
from otpki.web.listener import ListenAddress, UvicornListener
from otpki.web.tls import client_trust_pem, ensure_server_identity, server_context
from simulators.manufacturer import Manufacturer
from trustlists.engine import Engine
from trustlists.testing import PASSPHRASE, eventually, initialized_engine


async def echo_tls(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app answering with what it was given of the TLS extension."""
    assert scope["type"] == "http"
    tls = scope.get("extensions", {}).get("tls")
    body = json.dumps({"tls": tls, "scheme": scope["scheme"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return initialized_engine(tmp_path / "pki")


@pytest.fixture
def refused() -> list[_uvicorn_compat.RefusedHandshake]:
    return []


@pytest.fixture
async def listener(engine: Engine, tmp_path: Path,
                   refused: list[_uvicorn_compat.RefusedHandshake]) -> AsyncIterator[UvicornListener]:
    identity, issued = ensure_server_identity(engine, tmp_path / "web", group="web-server", names=["127.0.0.1"],
                                              actor="test", password=PASSPHRASE)
    assert issued
    ctx = server_context(identity, client_trust_pem(engine))
    server = UvicornListener(echo_tls, ListenAddress("127.0.0.1", 0, "test"), what="the test server",
                             ssl_context=ctx, on_refused=refused.append)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    await server.start()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before  # EmbeddedServer
    try:
        yield server
    finally:
        await server.stop()
    engine.close()


def root_pem(engine: Engine, tmp_path: Path) -> str:
    root = next(ca for ca in engine.hierarchy.list() if ca.parent_id is None)
    path = tmp_path / "root.pem"
    path.write_bytes(x509.load_der_x509_certificate(root.certificate_der).public_bytes(Encoding.PEM))
    return str(path)


async def curl(*args: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec("curl", "-sS", "--max-time", "20", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    answer: dict[str, Any] = json.loads(out)
    return answer


def test_gate_is_for_the_pinned_uvicorn() -> None:
    from importlib.metadata import version

    assert version("uvicorn") == _uvicorn_compat.WRITTEN_FOR


async def test_client_certificate_reaches_the_app_as_the_asgi_tls_extension(
        engine: Engine, listener: UvicornListener, tmp_path: Path) -> None:
    owner = engine.registry.register(group="mqtt-device", name="hmi-3", actor="test")
    issued = engine.authority.issue_with_new_key(owner_id=owner.id, actor="test")
    assert issued.private_key is not None
    leaf_pem = x509.load_der_x509_certificate(issued.certificate_der).public_bytes(Encoding.PEM)
    (tmp_path / "c.pem").write_bytes(leaf_pem)
    (tmp_path / "c.key").write_bytes(issued.private_key)

    answer = await curl("--cacert", root_pem(engine, tmp_path), "--cert", str(tmp_path / "c.pem"), "--key",
                        str(tmp_path / "c.key"), f"{listener.url}/")
    tls = answer["tls"]
    assert answer["scheme"] == "https"
    assert tls["client_cert_chain"][0] == leaf_pem.decode()
    assert tls["client_cert_name"] == "O=otpki,CN=hmi-3"  # RFC 4514 order, as the extension asks
    assert tls["client_cert_error"] is None and tls["tls_version"] in (0x0303, 0x0304)


async def test_without_a_client_certificate_the_chain_is_empty(engine: Engine, listener: UvicornListener,
                                                               tmp_path: Path) -> None:
    answer = await curl("--cacert", root_pem(engine, tmp_path), f"{listener.url}/")
    assert answer["tls"]["client_cert_chain"] == [] and answer["tls"]["client_cert_name"] is None


async def test_plain_http_has_no_tls_extension(engine: Engine) -> None:
    server = UvicornListener(echo_tls, ListenAddress("127.0.0.1", 0, "test"), what="the test server")
    await server.start()
    try:
        answer = await curl(f"{server.url}/")
    finally:
        await server.stop()
        engine.close()
    assert answer == {"tls": None, "scheme": "http"}


def test_check_refuses_another_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_uvicorn_compat, "version", lambda _name: "0.0.1")
    with pytest.raises(_uvicorn_compat.UvicornIncompatible, match=r"written for uvicorn 0\.55\.0"):
        _uvicorn_compat._check()


async def test_a_foreign_client_certificate_is_refused_in_the_handshake_and_reported(
        engine: Engine, listener: UvicornListener, tmp_path: Path,
        refused: list[_uvicorn_compat.RefusedHandshake]) -> None:
    rogue = Manufacturer.create("Rogue Devices").issue_idevid("SN-rogue")  # a CA the engine never imported
    (tmp_path / "r.pem").write_text(rogue.cert_file_pem)
    (tmp_path / "r.key").write_text(rogue.key_pem)
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "20", "--cacert", root_pem(engine, tmp_path), "--cert", str(tmp_path / "r.pem"),
        "--key", str(tmp_path / "r.key"), "-o", "/dev/null", "-w", "%{http_code}", f"{listener.url}/",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode != 0 and out == b"000", err  # no HTTP exchange at all
    await eventually(lambda: bool(refused), "the refusal reported")
    (report,) = refused
    assert report.peer == "127.0.0.1" and report.port > 0
    assert report.verify_code == 20 and report.alert == "unknown_ca"
    assert "unable to get local issuer certificate" in report.reason
    # The listener goes on serving.
    answer = await curl("--cacert", root_pem(engine, tmp_path), f"{listener.url}/")
    assert answer["scheme"] == "https" and answer["tls"]["client_cert_chain"] == []
