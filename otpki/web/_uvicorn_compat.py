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

Refused handshakes. With the TLS handshake inside asyncio's server (`create_server(ssl=...)`), a handshake that
fails (a client certificate from a CA the engine does not trust) never reaches the protocol: asyncio drops it
silently, and the stdlib ssl module has no verify callback to see it either. `tls_protocol(context, on_refused)`
makes the protocol do the handshake itself: uvicorn listens on plain TCP, and `connection_made` hands the socket to
the public `loop.start_tls` (server side, the listener's context); a client certificate the context refuses
raises there with OpenSSL's verify code and message, and `on_refused` gets them with the peer's address. After a
handshake that succeeds, uvicorn's own `connection_made` runs with the TLS transport (its scheme "https" comes from
the transport's "sslcontext", `is_ssl`, checked at import). Bytes the TLS layer hands over before that are held
and replayed; a connection that ends during the handshake never reaches uvicorn's `connection_lost`.

Python 3.11's ssl module gives the peer's own certificate only (the verified chain arrives in 3.13): the
chain holds the client's certificate, plus what `get_verified_chain` returns where Python has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import ssl
from collections.abc import Callable, Generator
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, ClassVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from uvicorn import Server
from uvicorn.protocols.http.h11_impl import H11Protocol

WRITTEN_FOR = "0.55.0"
HANDSHAKE_TIMEOUT_S = 30.0

log = logging.getLogger(__name__)

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
    made = inspect.getsource(H11Protocol.connection_made)
    if "is_ssl(transport)" not in made or "self.transport = transport" not in made:
        raise UvicornIncompatible("H11Protocol.connection_made no longer takes the scheme from the transport it is "
                                  "given (is_ssl), so a TLS handshake done by the protocol would serve http")
    lost = inspect.getsource(H11Protocol.connection_lost)
    if "self.transport" not in lost:
        raise UvicornIncompatible("H11Protocol.connection_lost changed (the gate keeps connections that never "
                                  "finished their handshake away from it)")
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


@dataclass(frozen=True)
class RefusedHandshake:
    """A TLS handshake the listener refused because of the client's certificate."""

    peer: str  # the client's address
    port: int
    reason: str  # OpenSSL's verify message ("unable to get local issuer certificate")
    verify_code: int | None  # OpenSSL's X509_V_ERR_* number
    # The TLS alert (RFC 8446 6.2) OpenSSL chose for the code. asyncio closes the connection at once on a failed
    # handshake, so the client may see the connection end rather than the alert itself.
    alert: str


OnRefused = Callable[[RefusedHandshake], None]

# OpenSSL's choice of alert for a failed verification (ssl_verify_alarm_type in ssl/statem/statem_lib.c), for the
# codes a foreign, expired or revoked client certificate produces; the rest send certificate_unknown or
# bad_certificate, named here by the verify message only.
_ALERTS = {2: "unknown_ca", 18: "unknown_ca", 19: "unknown_ca", 20: "unknown_ca", 21: "unknown_ca", 24: "unknown_ca",
           27: "unknown_ca", 9: "bad_certificate", 10: "certificate_expired", 23: "certificate_revoked",
           7: "decrypt_error", 8: "decrypt_error"}


@dataclass
class _Binding:
    context: ssl.SSLContext
    on_refused: OnRefused | None
    handshakes: set[asyncio.Task[None]]  # strong references until each ends (the loop keeps only weak ones)


class TlsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, giving the app the ASGI TLS extension on TLS connections; bound to a context by
    `tls_protocol`, it does the TLS handshake itself and reports refused client certificates."""

    _binding: ClassVar[_Binding | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._early: list[bytes] | None = None  # bytes that arrived between the handshake and uvicorn's set-up
        self._lost = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # (uvicorn's own)
        binding = self._binding
        if binding is not None and transport.get_extra_info("sslcontext") is None:
            transport.pause_reading()  # start_tls takes over the socket's bytes; none may reach h11 before it
            self._early = []
            task = asyncio.get_running_loop().create_task(self._handshake(transport, binding))
            binding.handshakes.add(task)
            task.add_done_callback(binding.handshakes.discard)
            return
        self._connected(transport)

    async def _handshake(self, raw: asyncio.Transport, binding: _Binding) -> None:
        peer = raw.get_extra_info("peername") or ("?", 0)
        try:
            tls = await asyncio.get_running_loop().start_tls(raw, self, binding.context, server_side=True,
                                                               ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S)
        except ssl.SSLCertVerificationError as exc:
            raw.close()
            code = exc.verify_code if isinstance(exc.verify_code, int) else None
            refused = RefusedHandshake(peer=str(peer[0]), port=int(peer[1]), verify_code=code,
                                       reason=str(exc.verify_message or exc.reason or exc),
                                       alert=_ALERTS.get(code or -1, "certificate_unknown"))
            if binding.on_refused is not None:
                try:
                    binding.on_refused(refused)
                except Exception:  # reporting must not break the listener
                    log.exception("could not report a refused TLS handshake")
            return
        except (ssl.SSLError, OSError, TimeoutError, EOFError) as exc:
            # Not a certificate we refused: a port scan, plain HTTP on the HTTPS port, a client that did not trust
            # our certificate, a client that left. Nothing to audit.
            raw.close()
            log.debug("TLS handshake with %s failed: %s", peer, exc)
            return
        if tls is None or self._lost:
            return
        self._connected(tls)

    def _connected(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject):
            self.app = _WithTls(self.app, tls_extension(ssl_object))
        early, self._early = self._early, None
        for chunk in early or []:
            super().data_received(chunk)

    def data_received(self, data: bytes) -> None:
        if self._early is not None:
            self._early.append(data)
            return
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._early is not None:  # ended before uvicorn's connection_made: it has nothing to clean up
            self._lost = True
            return
        super().connection_lost(exc)

    @classmethod
    def cancel_handshakes(cls) -> None:
        """Stop the handshakes still running (the listener is stopping)."""
        if cls._binding is not None:
            for task in list(cls._binding.handshakes):
                task.cancel()


def tls_protocol(context: ssl.SSLContext, on_refused: OnRefused | None = None) -> type[TlsH11Protocol]:
    """The protocol class for a listener that does its TLS handshakes in the protocol (uvicorn itself gets no
    ssl context): `on_refused` learns of every client certificate the context refused."""
    return type("BoundTlsH11Protocol", (TlsH11Protocol,),
                {"_binding": _Binding(context, on_refused, set())})


class EmbeddedServer(Server):
    """uvicorn's Server for a loop that is not its own: `serve()` leaves the process's signal handlers alone.

    uvicorn's `serve()` replaces SIGINT/SIGTERM handlers for its run (`capture_signals`) and re-raises the signal
    afterwards; under `otpki serve` the supervisor owns those signals and stops the server itself (should_exit).
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield
