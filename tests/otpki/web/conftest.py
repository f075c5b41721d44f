"""A console on a real uvicorn over HTTPS on 127.0.0.1:0, with a server certificate the engine issued, and three
users (ca-admin, operator, viewer) whose TOTP codes the tests compute from the engine's settable clock."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pyotp
import pytest

from otpki.web.app import create_app
from otpki.web.settings import ConsoleSettings
from otpki.web.testing import running
from trustlists.engine import Engine
from trustlists.models import KeyType
from trustlists.policy import load_default_config
from trustlists.testing import Clock, initialized_engine

PASSWORD = "console password 1"
USERS = {"admin": "ca-admin", "op": "operator", "view": "viewer"}


@dataclass
class Console:
    url: str
    engine: Engine
    clock: Clock
    tls: ssl.SSLContext
    secrets: dict[str, str]
    tls_files: tuple[Path, Path]  # the server's certificate and key, for a second app on the same engine

    def code(self, user: str) -> str:
        """A code of the next time step (the clock moves on 30 s): every call gives one not used yet."""
        self.clock.now += timedelta(seconds=30)
        return pyotp.TOTP(self.secrets[user]).at(self.clock.now)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, verify=self.tls, follow_redirects=False, timeout=30)

    async def login(self, client: httpx.AsyncClient, user: str) -> str:
        """An API login: the session cookie lands in the client; returns the CSRF token."""
        res = await client.post("/api/v1/session", json={"name": user, "password": PASSWORD,
                                                           "totp": self.code(user)})
        assert res.status_code == 200, res.text
        return str(res.json()["csrf_token"])


@pytest.fixture
def web_engine(tmp_path: Path) -> Iterator[tuple[Engine, Clock]]:
    config = load_default_config()
    groups = dict(config.groups)
    groups["opcua-user"] = groups["opcua-user"].model_copy(update={"auto_approve": False})  # requests wait
    config = config.model_copy(update={"root": config.root.model_copy(update={"key_type": KeyType.RSA2048}),
                                       "groups": groups})
    clock = Clock()
    eng = initialized_engine(tmp_path / "pki", clock=clock, config=config, actor="tester")
    yield eng, clock
    eng.close()


def server_identity(engine: Engine, directory: Path) -> tuple[Path, Path, Path]:
    """(certificate, key, CA bundle) of a TLS server certificate the engine issues for 127.0.0.1."""
    owner = engine.registry.register(group="opcua-application", name="console", actor="tester",
                                     application_uri="urn:otpki:console", dns_names=["localhost"],
                                     ip_addresses=["127.0.0.1"])
    issued = engine.authority.issue_with_new_key(owner_id=owner.id, actor="tester", key_type=KeyType.EC_P256)
    from otpki.web.views import pem

    cert, key, cas = directory / "console.pem", directory / "console.key", directory / "cas.pem"
    cert.write_text(pem(issued.certificate_der) + "".join(pem(d) for d in issued.chain_der[:-1]))
    key.write_bytes(issued.private_key or b"")
    key.chmod(0o600)
    cas.write_text(pem(issued.chain_der[-1]))
    return cert, key, cas


@pytest.fixture
async def console(web_engine: tuple[Engine, Clock], tmp_path: Path) -> AsyncIterator[Console]:
    engine, clock = web_engine
    secrets = {name: engine.accounts.add_user(name, role, PASSWORD, actor="tester").totp_secret
               for name, role in USERS.items()}
    cert, key, cas = server_identity(engine, tmp_path)
    tls = ssl.create_default_context(cafile=str(cas))
    app = create_app(engine, ConsoleSettings())
    async with running(app, certfile=cert, keyfile=key) as url:
        yield Console(url=url, engine=engine, clock=clock, tls=tls, secrets=secrets, tls_files=(cert, key))
