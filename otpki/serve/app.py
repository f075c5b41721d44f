"""The ASGI apps the listeners serve: the console/API app (otpki.web.app, when present) with /healthz, /readyz and
the routers of the registered fronts; and the plain-HTTP app with the fronts whose RFCs serve over HTTP.

Contract for the web console (otpki/web/app.py): `create_app(engine, settings) -> FastAPI`. `build_asgi_app`
calls it when that module exists, else starts from a bare FastAPI, then adds the health routes and every
`ROUTERS` entry. A front (OCSP, CRLs, EST) joins by one `register_router(RouterSpec(...))` line in `ROUTERS`
below: a factory `(engine, settings) -> APIRouter`, and whether the plain-HTTP listener serves it too.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from otpki.config import Settings
from otpki.serve.supervisor import PartStatus, Supervisor
from trustlists.blocking import run_blocking
from trustlists.engine import Engine

if TYPE_CHECKING:
    from opcua_gds.push.client import StepOutcome
    from otpki.web.presence import DevicePresence
    from otpki.web.push_progress import Pusher, StepListener

KEY_PROBE_CACHE_S = 10.0  # a probe signs with every CA key (the HSM too): not once per load-balancer poll


@dataclass(frozen=True)
class RouterSpec:
    name: str
    factory: Callable[[Engine, Settings], APIRouter]
    plain_http: bool = False  # also on the plain-HTTP listener ([web] http_listen): OCSP, CRLs


def _ocsp(engine: Engine, settings: Settings) -> APIRouter:
    from http_fronts.ocsp.router import ocsp_router

    web = settings.file.web
    return ocsp_router(engine, web.ocsp) if web.ocsp_enabled else APIRouter()


def _crl(engine: Engine, settings: Settings) -> APIRouter:
    from http_fronts.crl import crl_router

    web = settings.file.web
    return crl_router(engine, web.crl) if web.crl_enabled else APIRouter()


ROUTERS: list[RouterSpec] = [
    RouterSpec("ocsp", _ocsp, plain_http=True),
    RouterSpec("crl", _crl, plain_http=True),
]


def register_router(spec: RouterSpec) -> None:
    if any(r.name == spec.name for r in ROUTERS):
        raise ValueError(f"a router named {spec.name} is registered already")
    ROUTERS.append(spec)


def _est_router(engine: Engine, settings: Settings) -> APIRouter:
    from http_fronts.est.router import est_router

    est = settings.file.web.est
    return est_router(engine, est) if est.enabled else APIRouter()


register_router(RouterSpec("est", _est_router))  # HTTPS only: EST authenticates by TLS client certificate


class Readiness(BaseModel):
    ready: bool
    problems: list[str]
    parts: list[PartStatus]


class _KeyProbes:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._at = -float("inf")
        self._problems: list[str] = []

    def problems(self) -> list[str]:
        """Blocking: the store answers, and every live issuing CA's key signs (cached for KEY_PROBE_CACHE_S)."""
        if time.monotonic() - self._at < KEY_PROBE_CACHE_S:
            return self._problems
        problems: list[str] = []
        try:
            statuses = self._engine.ca_statuses()
        except Exception as exc:  # whatever the store's driver raises: this answer is the report
            problems.append(f"store: {type(exc).__name__}: {exc}")
        else:
            if not statuses:
                problems.append("store: no CA (run `otpki init`)")
            now = self._engine.now()
            for status in statuses:
                # The root's key may be kept offline (doctor warns, no more): only the issuing CAs must sign.
                if not status.live_at(now) or status.record.parent_id is None:
                    continue
                probe = self._engine.probe_ca_key(status.record.id)
                if not probe.ok:
                    problems.append(f"CA key {probe.ca_id}: {probe.problem}")
        self._problems, self._at = problems, time.monotonic()
        return problems


def health_router(engine: Engine, supervisor: Supervisor, *, readiness: bool = True) -> APIRouter:
    """/healthz, and with `readiness` /readyz (which names CAs and part errors: not for the plain-HTTP listener,
    which serves what its RFCs put there and nothing about the service's inside)."""
    router = APIRouter()
    probes = _KeyProbes(engine)

    @router.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}  # answered by the event loop: if this answers, the loop runs

    if not readiness:
        return router

    @router.get("/readyz", include_in_schema=False, response_model=Readiness)
    async def readyz() -> JSONResponse:
        problems = list(await run_blocking(probes.problems))
        parts = supervisor.status()
        for part in parts:
            if part.state != "running":
                why = f" (last error: {part.last_error})" if part.last_error else ""
                problems.append(f"part {part.name}: {part.state}{why}")
        body = Readiness(ready=not problems, problems=problems, parts=parts)
        return JSONResponse(body.model_dump(mode="json"), status_code=200 if body.ready else 503)

    return router


def _pusher(engine: Engine, settings: Settings) -> Pusher:
    """The console's "push now": one target, now, by the same push client and leases as the scheduler; `on_step`
    hears each stage of it (the console's live progress)."""

    async def push(target_id: str, *, on_step: StepListener | None = None) -> dict[str, Any]:
        from otpki.serve.parts import new_rollout

        target = await run_blocking(engine.targets.get, target_id)
        rollout = await new_rollout(engine, settings)
        relay = None if on_step is None else _relay(on_step)
        report = await rollout.run(address=target.address, on_step=relay)
        return report.model_dump(mode="json")

    return push


def _relay(listener: StepListener) -> Callable[[str, StepOutcome], None]:
    def relay(target_id: str, step: StepOutcome) -> None:
        listener({"target_id": target_id, **step.model_dump(mode="json")})

    return relay


def _console_app(engine: Engine, settings: Settings, supervisor: Supervisor,
                 presence: DevicePresence | None = None) -> FastAPI:
    try:
        module: Any = importlib.import_module("otpki.web.app")
    except ModuleNotFoundError as exc:
        if exc.name != "otpki.web.app":
            raise  # the console's own import failed: that is a bug to see, not a console to leave out
        return FastAPI(title="otpki", docs_url=None, redoc_url=None, openapi_url=None)
    web = settings.file.web
    console = web.console
    if not web.tls:  # a plain-HTTP loopback listener: a Secure cookie would never come back
        console = console.model_copy(update={"secure_cookies": False})
    app = module.create_app(engine, console, status_provider=supervisor.status, pusher=_pusher(engine, settings),
                            presence=presence)
    assert isinstance(app, FastAPI)
    return app


def build_asgi_app(engine: Engine, settings: Settings, supervisor: Supervisor,
                 presence: DevicePresence | None = None) -> FastAPI:
    """The HTTPS listener's app: the console and API, the health routes and every registered front. `presence`:
    the embedded broker's part (otpki.web.presence.DevicePresence), when it runs: the Devices page's online column."""
    app = _console_app(engine, settings, supervisor, presence)
    app.include_router(health_router(engine, supervisor))
    for spec in ROUTERS:
        app.include_router(spec.factory(engine, settings))
    return app


def build_plain_http_app(engine: Engine, settings: Settings, supervisor: Supervisor) -> FastAPI:
    """The plain-HTTP listener's app: the health routes and the fronts meant for HTTP (OCSP, CRLs), nothing else."""
    app = FastAPI(title="otpki (plain HTTP)", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(health_router(engine, supervisor, readiness=False))
    for spec in ROUTERS:
        if spec.plain_http:
            app.include_router(spec.factory(engine, settings))
    return app
