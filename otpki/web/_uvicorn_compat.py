"""The ASGI TLS extension on uvicorn, in one place, checked when this module is imported.

EST (RFC 7030) authenticates a device by the TLS client certificate it sent; an ASGI app learns it from
`scope["extensions"]["tls"]` (the ASGI TLS extension: `client_cert_chain`, PEM strings, the client's own
certificate first). uvicorn 0.55.0, the newest release, does not fill that extension in: its h11 protocol builds
the scope without it (read in uvicorn/protocols/http/h11_impl.py, `handle_events`).

`TlsH11Protocol` is uvicorn's h11 protocol with the extension added: when a connection is made over TLS it reads
the peer certificate from the transport's `ssl_object` and wraps the protocol's `app` (the attribute
`handle_events` hands each request to) so every request on that connection carries the extension. It is selected
through uvicorn's public `Config(http=...)`; what it relies on beyond that, the `app` attribute set by
`H11Protocol.__init__` and read by `handle_events`, is checked at import by `_check()` and raises
`UvicornIncompatible` naming the version this was written for. `EmbeddedServer` keeps uvicorn's `serve()` from
taking over SIGINT/SIGTERM (its `capture_signals`), which belong to the supervisor of `otpki serve`.
pyproject.toml pins uvicorn to exactly that version; tests/otpki/test_uvicorn_compat.py drives a real
uvicorn server with curl --cert and without.

Python 3.11's ssl module gives the peer's own certificate only (the verified chain arrives in 3.13): the
chain holds the client's certificate, plus what `get_verified_chain` returns where Python has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ssl
from collections.abc import Generator
from importlib.metadata import version
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from uvicorn import Server
from uvicorn.protocols.http.h11_impl import H11Protocol

WRITTEN_FOR = "0.55.0"

_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}  # the ASGI extension gives the version as its wire number

ASGIApp = Any  # uvicorn's ASGI3Application; typed loosely here: we only forward calls


class UvicornIncompatible(ImportError):
    """The installed uvicorn lacks something this gate relies on."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"otpki's uvicorn gate (otpki/web/_uvicorn_compat.py) was written for uvicorn {WRITTEN_FOR}; "
                         f"the installed {version('uvicorn')}: {problem}")


def _check() -> None:
    installed = version("uvicorn")
    if installed != WRITTEN_FOR:
        raise UvicornIncompatible("another version is installed (pyproject.toml pins it exactly)")
    init = inspect.getsource(H11Protocol.__init__)
    if "self.app = config.loaded_app" not in init:
        raise UvicornIncompatible("H11Protocol.__init__ no longer keeps the app in `self.app`")
    events = inspect.getsource(H11Protocol.handle_events)
    if "app = self.app" not in events or '"extensions"' in events:
        raise UvicornIncompatible("H11Protocol.handle_events no longer takes each request's app from `self.app`, "
                                  "or builds an `extensions` entry of its own (then this gate is not needed)")
    if not callable(getattr(H11Protocol, "connection_made", None)):
        raise UvicornIncompatible("H11Protocol.connection_made is gone")
    serve = inspect.getsource(Server.serve)
    if "with self.capture_signals()" not in serve or not callable(getattr(Server, "capture_signals", None)):
        raise UvicornIncompatible("Server.serve no longer installs its signal handlers through capture_signals")


_check()


def tls_extension(ssl_object: ssl.SSLObject) -> dict[str, object]:
    """The ASGI TLS extension's dict for one TLS connection."""
    chain: list[str] = []
    name: str | None = None
    leaf = ssl_object.getpeercert(binary_form=True)
    if leaf:
        cert = x509.load_der_x509_certificate(leaf)
        name = cert.subject.rfc4514_string()
        verified = getattr(ssl_object, "get_verified_chain", None)  # Python 3.13+
        ders = [c if isinstance(c, bytes) else c.public_bytes() for c in verified()] if callable(verified) else [leaf]
        chain = [x509.load_der_x509_certificate(d).public_bytes(Encoding.PEM).decode() for d in ders]
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        # With CERT_OPTIONAL a certificate that does not verify ends the handshake: one that arrives is verified.
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,  # Python's ssl names the suite but does not give its number
    }


class _WithTls:
    """The connection's app, with the TLS extension in every request's scope."""

    def __init__(self, app: ASGIApp, tls: dict[str, object]) -> None:
        self._app = app
        self._tls = tls

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") in ("http", "websocket"):
            scope = {**scope, "extensions": {**(scope.get("extensions") or {}), "tls": dict(self._tls)}}
        await self._app(scope, receive, send)


class TlsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, giving the app the ASGI TLS extension on TLS connections."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # (uvicorn's own)
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject):
            self.app = _WithTls(self.app, tls_extension(ssl_object))


class EmbeddedServer(Server):
    """uvicorn's Server for a loop that is not its own: `serve()` leaves the process's signal handlers alone.

    uvicorn's `serve()` replaces SIGINT/SIGTERM handlers for its run (`capture_signals`) and re-raises the signal
    afterwards; under `otpki serve` the supervisor owns those signals and stops the server itself (should_exit).
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield
