"""The console and the REST API as one ASGI app: `create_app(engine, settings)`; the listener (otpki/web/listener.py,
`otpki serve`) runs it on uvicorn.

No asset comes from the internet: the templates and the stylesheet are inside the package, FastAPI's interactive
docs (which load scripts from a CDN) are off, the OpenAPI document is at /api/openapi.json.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from otpki.web.api import Pusher, api_router
from otpki.web.errors import ApiError, body, from_engine
from otpki.web.presence import DevicePresence
from otpki.web.settings import ConsoleSettings
from trustlists.engine import Engine
from trustlists.errors import OtpkiError

STATIC = Path(__file__).parent / "static"
# The console runs no inline script or style and loads nothing from elsewhere; the SVG chart is inline markup.
# connect-src 'self': the PLCs page's script reads "push now"'s event stream from this origin's API.
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def create_app(engine: Engine, settings: BaseModel | None = None, status_provider: Callable[[], Any] | None = None,
               pusher: Pusher | None = None, presence: DevicePresence | None = None) -> FastAPI:
    """The app on `engine`. `settings`: a ConsoleSettings, or a settings model with a `console` field holding one
    (the `[web]` table); `status_provider`: what the supervisor reports of its parts (shown on the overview);
    `pusher`: runs "push now" for one target (the supervisor's push client); without it push answers 503;
    `presence`: which MQTT devices are online (the embedded broker's part); without it the Devices page says
    "unknown"."""
    console = _console_settings(settings)
    app = FastAPI(title="otpki", version="1", openapi_url="/api/openapi.json", docs_url=None, redoc_url=None)
    app.state.engine = engine
    app.state.console = console
    app.state.status_provider = status_provider
    from otpki.web.overview_cache import OverviewCache
    from otpki.web.pages import pages_router

    overview = OverviewCache(engine, console.overview_max_age_s)
    app.include_router(api_router(engine, console, pusher, overview))
    app.include_router(pages_router(engine, console, status_provider, pusher, overview, presence))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    def answer(request: Request, error: ApiError) -> Response:
        if wants_json(request):
            return JSONResponse(body(error.code, error.message), status_code=error.status)
        from otpki.web.pages import error_page

        return error_page(request, error)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return answer(request, exc)

    @app.exception_handler(OtpkiError)
    async def engine_error(request: Request, exc: OtpkiError) -> Response:
        return answer(request, from_engine(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return answer(request, ApiError(422, "invalid_request", f"{where}: {first.get('msg')}"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return answer(request, ApiError(exc.status_code, code, str(exc.detail)))

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        # The server's own time (W3C Server-Timing): what the console bench reads, and a browser's dev tools show.
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        if console.secure_cookies:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    return app


def _console_settings(settings: BaseModel | None) -> ConsoleSettings:
    if settings is None:
        return ConsoleSettings()
    if isinstance(settings, ConsoleSettings):
        return settings
    nested = getattr(settings, "console", None)
    if isinstance(nested, ConsoleSettings):
        return nested
    raise TypeError(f"create_app takes ConsoleSettings or a model with a `console: ConsoleSettings` field, not "
                    f"{type(settings).__name__}")
