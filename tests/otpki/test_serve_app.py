"""The apps of the listeners (otpki.serve.app): /healthz, /readyz with its reasons, the console contract and the
router registry. In-process over httpx's ASGI transport; the same routes over real sockets: test_serve.py."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from otpki.config import EnvSettings, FileSettings, Settings, build_settings
from otpki.serve import app as serve_app
from otpki.serve.app import RouterSpec, build_asgi_app, build_plain_http_app
from otpki.serve.supervisor import Supervisor
from trustlists.engine import Engine
from trustlists.testing import initialized_engine, make_engine


class Idle:
    def __init__(self, name: str, *, fails: bool = False) -> None:
        self.name = name
        self._fails = fails

    async def start(self) -> None:
        if self._fails:
            raise OSError("port taken")

    async def wait(self) -> None:
        import asyncio

        await asyncio.Event().wait()

    async def stop(self) -> None:
        pass


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return build_settings(FileSettings(), tmp_path / "pki", EnvSettings())


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = initialized_engine(tmp_path / "pki")
    yield eng
    eng.close()


async def get(app: FastAPI, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.get(path)


async def test_ready_when_store_keys_and_parts_are(engine: Engine, settings: Settings) -> None:
    sup = Supervisor([Idle("gds")])
    await sup.start()
    try:
        app = build_asgi_app(engine, settings, sup)
        assert (await get(app, "/healthz")).json() == {"status": "alive"}
        res = await get(app, "/readyz")
        assert res.status_code == 200 and res.json()["ready"] is True
        assert [p["name"] for p in res.json()["parts"]] == ["gds"]
    finally:
        await sup.stop()


async def test_not_ready_names_the_part_that_is_down(engine: Engine, settings: Settings) -> None:
    sup = Supervisor([Idle("gds"), Idle("mqtt", fails=True)], initial_backoff_s=60)
    await sup.start()
    try:
        res = await get(build_asgi_app(engine, settings, sup), "/readyz")
    finally:
        await sup.stop()
    assert res.status_code == 503
    assert res.json()["problems"] == ["part mqtt: backoff (last error: OSError: port taken)"]


async def test_not_ready_when_a_ca_key_cannot_sign(engine: Engine, settings: Settings, tmp_path: Path) -> None:
    wrong = make_engine(tmp_path / "pki", passphrase=b"not the passphrase of these keys")
    try:
        res = await get(build_asgi_app(wrong, settings, Supervisor([])), "/readyz")
    finally:
        wrong.close()
    assert res.status_code == 503
    problems = res.json()["problems"]
    assert problems and all(p.startswith("CA key ") for p in problems), problems
    assert any(p.startswith("CA key mqtt-device") for p in problems)


async def test_console_app_is_used_when_present_and_routers_join_by_registry(
        engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    console = FastAPI()

    @console.get("/")
    async def overview() -> dict[str, str]:
        return {"page": "overview"}

    made: list[tuple[Engine, object, object]] = []

    def create_app(eng: Engine, s: object, status_provider: object = None, pusher: object = None,
                   presence: object = None) -> FastAPI:
        made.append((eng, s, status_provider))
        assert callable(pusher)
        return console

    module = types.ModuleType("otpki.web.app")
    module.create_app = create_app  # type: ignore[attr-defined]  # (a stand-in for i14-web's module)
    monkeypatch.setitem(sys.modules, "otpki.web.app", module)

    def ocsp(_eng: Engine, _s: Settings) -> APIRouter:
        router = APIRouter()

        @router.get("/ocsp/ping")
        async def ping() -> str:
            return "ocsp"

        return router

    def est(_eng: Engine, _s: Settings) -> APIRouter:
        router = APIRouter()

        @router.get("/.well-known/est/ping")
        async def ping() -> str:
            return "est"

        return router

    monkeypatch.setattr(serve_app, "ROUTERS", [RouterSpec("ocsp", ocsp, plain_http=True), RouterSpec("est", est)])
    sup = Supervisor([])
    app = build_asgi_app(engine, settings, sup)
    assert made == [(engine, settings.file.web.console, sup.status)]
    assert (await get(app, "/")).json() == {"page": "overview"}
    assert (await get(app, "/ocsp/ping")).json() == "ocsp" and (await get(app, "/.well-known/est/ping")).json() == "est"
    assert (await get(app, "/healthz")).status_code == 200

    plain = build_plain_http_app(engine, settings, sup)
    assert (await get(plain, "/ocsp/ping")).json() == "ocsp"
    assert (await get(plain, "/.well-known/est/ping")).status_code == 404  # EST needs TLS: never on plain HTTP
    assert (await get(plain, "/")).status_code == 404  # nor the console
    assert (await get(plain, "/readyz")).status_code == 404  # nor what the service's inside looks like
    assert (await get(plain, "/healthz")).status_code == 200


async def test_without_the_console_module_a_bare_app_serves_health(
        engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "otpki.web.app", None)  # as before i14-web's console lands
    app = build_asgi_app(engine, settings, Supervisor([]))
    assert (await get(app, "/healthz")).status_code == 200
    assert (await get(app, "/docs")).status_code == 404


async def test_the_real_console_and_api_are_served_beside_health_and_the_fronts(engine: Engine, settings: Settings
                                                                             ) -> None:
    app = build_asgi_app(engine, settings, Supervisor([]))
    assert (await get(app, "/login")).status_code == 200
    assert (await get(app, "/api/openapi.json")).json()["info"]["title"] == "otpki"
    assert (await get(app, "/api/v1/certificates")).status_code == 401  # the API wants a session or a token
    assert (await get(app, "/healthz")).status_code == 200
    assert (await get(app, "/crl/no-such-ca.crl")).status_code == 404  # the CRL front is mounted
