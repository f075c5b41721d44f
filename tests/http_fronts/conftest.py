"""A real uvicorn on 127.0.0.1:0 serving the HTTP fronts of an engine, and the files independent clients need."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import FastAPI

from http_fronts.crl import CrlSettings, crl_router
from http_fronts.ocsp.router import ocsp_router
from http_fronts.ocsp.settings import OcspSettings
from trustlists.engine import Engine
from trustlists.models import IssuedCertificate, KeyType
from trustlists.policy import PkiConfig, load_default_config
from trustlists.testing import eventually, initialized_engine, make_csr

EC_ROOT_TOML = '[pki.root]\nkey_type = "ec-p256"\n'


def ec_root_config() -> PkiConfig:
    """The default groups under a P-256 root: the key ceremony of a test costs milliseconds."""
    config = load_default_config()
    return config.model_copy(update={"root": config.root.model_copy(update={"key_type": KeyType.EC_P256})})


@contextlib.asynccontextmanager
async def serving(app: FastAPI, **config: object) -> AsyncIterator[str]:
    """uvicorn in this event loop on a free port; its base URL while the block runs, stopped after it."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off",
                                           **config))  # type: ignore[arg-type]  # uvicorn's keywords, checked by it
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started or task.done(), "uvicorn listening")
        if task.done():
            task.result()  # raises why it did not start
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def fronts_app(engine: Engine, ocsp: OcspSettings | None = None, crl: CrlSettings | None = None) -> FastAPI:
    app = FastAPI()
    app.include_router(ocsp_router(engine, ocsp))
    app.include_router(crl_router(engine, crl))
    return app


async def run(*cmd: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[int, str, str]:
    """An independent client (openssl, curl, another otpki process) as a real process; (exit status, stdout,
    stderr). Killed if it runs past a minute."""
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env=env, cwd=cwd)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


@dataclass
class Issued:
    """A certificate the engine issued, as PEM files: itself, its issuer, and the root."""

    serial: str
    cert: Path
    issuer: Path
    root: Path
    certificate: x509.Certificate
    issuer_certificate: x509.Certificate


def pem_files(issued: IssuedCertificate, folder: Path, name: str) -> Issued:
    folder.mkdir(parents=True, exist_ok=True)
    cert = x509.load_der_x509_certificate(issued.certificate_der)
    chain = [x509.load_der_x509_certificate(d) for d in issued.chain_der]
    paths = [folder / f"{name}.pem", folder / f"{name}-issuer.pem", folder / f"{name}-root.pem"]
    for path, c in zip(paths, [cert, chain[0], chain[-1]], strict=True):
        path.write_bytes(c.public_bytes(Encoding.PEM))
    return Issued(issued.record.serial, *paths, cert, chain[0])


def issue(engine: Engine, name: str, folder: Path) -> Issued:
    owner = engine.registry.register(group="mqtt-device", name=name, actor="tester")
    return pem_files(engine.authority.issue_from_csr(make_csr(name), owner_id=owner.id, actor="tester"), folder, name)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = initialized_engine(tmp_path / "pki", config=ec_root_config(), actor="tester")
    (tmp_path / "pki" / "otpki.toml").write_text(EC_ROOT_TOML)  # what a CLI process on this data directory reads
    eng.ocsp_signers.ensure(actor="tester")  # the maintenance leader's work, done before serving
    yield eng
    eng.close()
