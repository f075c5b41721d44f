"""The web listeners of `otpki serve`, on uvicorn in the supervisor's event loop.

- the main listener (`[web] listen`, --listen): HTTPS with the engine-issued certificate (otpki.web.tls),
  client certificates requested and handed to the app (ASGI TLS extension, otpki.web._uvicorn_compat); plain
  HTTP only on a loopback address and only when asked (`[web] tls = false`, --insecure-http).
- the plain-HTTP listener (`[web] http_listen`, --http-listen): OCSP and CRLs only, off unless set.

Each binds its socket itself (port 0: the OS picks one; a restart binds the same port again) so a failed bind is
the one-line ListenAddressError of otpki.listen, never uvicorn's exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from otpki.listen import ListenAddressError, listen_error
from trustlists.errors import InvalidInput

if TYPE_CHECKING:
    from otpki.config import Settings
    from otpki.web.refused_handshakes import RefusedHandshakeAudit
    from otpki.web.tls import ServerIdentity
    from trustlists.engine import Engine

log = logging.getLogger(__name__)

GRACEFUL_S = 3  # open requests (a console's event stream) get this long to finish when the listener stops
RENEW_CHECK_S = 6 * 3600.0  # how often the running listener asks whether its certificate is due (30-day window)


class PlainHttpRefused(InvalidInput):
    reason = "plain_http_refused"


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int
    setting: str  # where it was set, for the error messages

    @property
    def url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def with_port(self, port: int) -> ListenAddress:
        return ListenAddress(self.host, port, self.setting)


def parse_listen(text: str, setting: str) -> ListenAddress:
    """HOST:PORT or [IPv6]:PORT; port 0 asks the OS for a free one."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host:
        raise InvalidInput(f"{setting}: {text!r} is not HOST:PORT (e.g. 127.0.0.1:8443 or [::1]:8443)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise InvalidInput(f"{setting}: write an IPv6 address in brackets, e.g. [{host}]:{port}")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidInput(f"{setting}: {port!r} is not a port (0-65535)")
    return ListenAddress(host, int(port), setting)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_plain_http(address: ListenAddress, *, tls: bool) -> None:
    """Plain HTTP for the console is for this machine only: the session cookies and passwords would cross the
    plant network in clear text."""
    if not tls and not is_loopback(address.host):
        raise PlainHttpRefused(
            f"the console serves plain HTTP only on a loopback address (127.0.0.1, ::1, localhost), not on "
            f"{address.url_host}:{address.port}: drop --insecure-http / `[web] tls = false` to serve HTTPS with an "
            f"engine-issued certificate, or listen on 127.0.0.1 behind a TLS proxy ({address.setting})")


def bind(address: ListenAddress, what: str) -> socket.socket:
    """A listening-ready socket on the address (the first the name resolves to); ListenAddressError otherwise."""
    try:
        infos = socket.getaddrinfo(address.host or None, address.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise listen_error(exc, address.host, address.port, what=what, setting=address.setting) from None
    family, kind, proto, _name, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise listen_error(exc, address.host, address.port, what=what, setting=address.setting) from None
    sock.setblocking(False)
    return sock


class UvicornListener:
    """One uvicorn server on one socket, started and stopped in the running loop."""

    def __init__(self, app: Any, address: ListenAddress, *, what: str, ssl_context: Any = None,
                 on_refused: Callable[[Any], None] | None = None) -> None:
        self._app = app
        self.address = address
        self._what = what
        self._ssl = ssl_context
        self._on_refused = on_refused  # a client certificate the TLS handshake refused (a RefusedHandshake)
        self._protocol: Any = None
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl is not None else 'http'}://{self.address.url_host}:{self.port}"

    async def start(self) -> None:
        import uvicorn

        from otpki.web._uvicorn_compat import EmbeddedServer, TlsH11Protocol, tls_protocol

        address = self.address if self.port is None else self.address.with_port(self.port)
        sock = bind(address, self._what)
        self.port = sock.getsockname()[1]
        # uvicorn listens on TCP; the protocol does the TLS handshake, so a refused client certificate is seen
        # (otpki/web/_uvicorn_compat.py).
        protocol = TlsH11Protocol if self._ssl is None else tls_protocol(self._ssl, self._on_refused)
        self._protocol = protocol
        config = uvicorn.Config(self._app, http=protocol, lifespan="off", log_config=None,
                                access_log=False, timeout_graceful_shutdown=GRACEFUL_S, server_header=False)
        server = EmbeddedServer(config)
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name=f"uvicorn {self.url}")
        deadline = asyncio.get_running_loop().time() + 30
        while not server.started:
            if self._task.done():
                sock.close()
                self._task.result()  # uvicorn's own error, if it raised one
                raise ListenAddressError(f"{self._what} on {self.url} ended while starting")
            if asyncio.get_running_loop().time() > deadline:
                raise ListenAddressError(f"{self._what} on {self.url} did not start within 30 s")
            await asyncio.sleep(0.01)
        # The socket is the asyncio server's now: uvicorn's shutdown closes it.

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        if self._protocol is not None:
            self._protocol.cancel_handshakes()
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=GRACEFUL_S + 2)
        except (TimeoutError, Exception):
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class WebListeners:
    """The supervisor's `web` part: the main listener and, when configured, the plain-HTTP one."""

    name = "web"

    def __init__(self, engine: Engine, settings: Settings, *, main: ListenAddress, tls: bool,
                 http: ListenAddress | None, main_app: Any, http_app: Any,
                 announce: Callable[[str], None] | None = None, renew_check_s: float = RENEW_CHECK_S) -> None:
        check_plain_http(main, tls=tls)
        self._engine, self._settings = engine, settings
        self._main_address, self._tls, self._http_address = main, tls, http
        self._main_app, self._http_app = main_app, http_app
        self._announce = announce or (lambda _text: None)
        self.main: UvicornListener | None = None
        self.http: UvicornListener | None = None
        self.identity: ServerIdentity | None = None
        self._renew_check_s = renew_check_s
        self._renewer: asyncio.Task[None] | None = None
        self._refusals: RefusedHandshakeAudit | None = None

    async def start(self) -> None:
        from trustlists.blocking import run_blocking

        ssl_context = await run_blocking(self._ssl_context) if self._tls else None
        if self.main is None:
            if ssl_context is not None:
                from otpki.web.refused_handshakes import RefusedHandshakeAudit

                self._refusals = RefusedHandshakeAudit(self._engine, "web")
            self.main = UvicornListener(self._main_app, self._main_address, what="the web console",
                                        ssl_context=ssl_context, on_refused=self._refusals)
        else:
            self.main._ssl = ssl_context  # a restart takes a renewed certificate
        await self.main.start()
        self._announce(f"web console listening on {self.main.url}")
        if self._http_address is not None:
            if self.http is None:
                self.http = UvicornListener(self._http_app, self._http_address, what="the plain-HTTP listener")
            await self.http.start()
            self._announce(f"plain-HTTP listener (OCSP, CRLs) on {self.http.url}")
        if ssl_context is not None:
            self._renewer = asyncio.create_task(self._keep_renewed(ssl_context))

    async def _keep_renewed(self, ssl_context: Any) -> None:
        """Renew the certificate while running: a renewed (or replaced, after a revocation) certificate goes into
        the live context, so the next handshake presents it without a restart; CAs added to the trust lists since
        (a manufacturer CA imported) are trusted for client certificates from then on too."""
        from otpki.web.tls import client_trust_pem, ensure_server_identity, key_password
        from trustlists.blocking import run_blocking

        s = self._settings
        while True:
            await asyncio.sleep(self._renew_check_s)
            try:
                names = list(self.identity.names) if self.identity is not None else []
                identity, issued = await run_blocking(
                    ensure_server_identity, self._engine, Path(s.data_dir) / "web", group=s.file.web.group,
                    names=names, actor=s.actor(), password=key_password(s.passphrase))
                if issued:
                    ssl_context.load_cert_chain(identity.cert_file, identity.key_file, password=identity.password)
                    self.identity = identity
                    self._announce(f"renewed the web console's certificate for {', '.join(names)}")
                ssl_context.load_verify_locations(cadata=(await run_blocking(client_trust_pem, self._engine)).decode())
            except Exception:  # a locked store, a CA key out of reach: the current certificate serves on; next time
                log.exception("could not check the web console's certificate; trying again in %.0f s",
                              self._renew_check_s)

    def _ssl_context(self) -> Any:
        from otpki.web.tls import (
            certificate_names,
            client_trust_pem,
            ensure_server_identity,
            key_password,
            server_context,
            write_root_file,
        )

        s = self._settings
        names = certificate_names(self._main_address.host, s.file.web.host_names)
        identity, issued = ensure_server_identity(
            self._engine, Path(s.data_dir) / "web", group=s.file.web.group, names=names, actor=s.actor(),
            password=key_password(s.passphrase))
        if issued:
            self._announce(f"issued the web console a certificate for {', '.join(names)}")
        root = write_root_file(self._engine, identity.cert_file.parent)
        self._announce(f"browsers verify the console with the plant root CA in {root}")
        self.identity = identity
        return server_context(identity, client_trust_pem(self._engine))

    async def wait(self) -> None:
        waits = [asyncio.ensure_future(listener.wait()) for listener in (self.main, self.http) if listener]
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in waits:
                task.cancel()

    async def stop(self) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        for listener in (self.http, self.main):
            if listener is not None:
                await listener.stop()
        if self._refusals is not None:
            await self._refusals.close()

    def addresses(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.main is not None and self.main.port is not None:
            out["web"] = self.main.url
        if self.http is not None and self.http.port is not None:
            out["http"] = self.http.url
        return out
