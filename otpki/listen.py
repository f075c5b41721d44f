"""Listen addresses of the server commands, checked before a server starts and explained when a bind fails.

asyncua and amqtt bind last, after certificates are issued and the address space is built, and log the
failure with a traceback before re-raising it. So every server command first binds (and releases) the
address the way asyncio's create_server will (every address the name resolves to, SO_REUSEADDR): a port in
use, an address that is not this machine's, a privileged port or a name that does not resolve is one line
naming the address and what to do, before anything is started or written. A bind that still fails later (the
port taken in between) is explained by `listen_error` the same way.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from trustlists.errors import OtpkiError


class ListenAddressError(OtpkiError):
    reason = "listen_address"


@dataclass(frozen=True)
class Listen:
    """Where a server command will listen, and where the operator set it (for the advice)."""

    host: str
    port: int
    what: str  # "the GDS", "the MQTT broker"
    setting: str  # "--port or [mqtt] port"
    allow_any_port: bool = False  # port 0: the OS picks a free one

    def check(self) -> None:
        check_listen_address(self.host, self.port, what=self.what, setting=self.setting,
                             allow_any_port=self.allow_any_port)

    @contextmanager
    def explained(self) -> Iterator[None]:
        """Around a server's start: a failed bind becomes ListenAddressError, anything else passes unchanged."""
        try:
            yield
        except Exception as exc:
            failure = bind_failure(exc)
            if failure is None:
                raise
            raise listen_error(failure, self.host, self.port, what=self.what, setting=self.setting) from None


def check_listen_address(host: str, port: int, *, what: str, setting: str, allow_any_port: bool = False) -> None:
    """Raise ListenAddressError unless `what` could listen on host:port right now.

    `setting` names where the address comes from (`--port or [mqtt] port`), for the advice; `allow_any_port`
    admits port 0 (the OS picks a free one).
    """
    low = 0 if allow_any_port else 1
    if not low <= port <= 65535:
        raise ListenAddressError(f"{what} cannot listen on port {port}: ports are {low}-65535 ({setting})")
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise listen_error(exc, host, port, what=what, setting=setting) from None
    for family, kind, proto, _name, sockaddr in dict.fromkeys(addresses):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does on POSIX
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # likewise
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                raise listen_error(exc, host, port, what=what, setting=setting) from None


def listen_error(exc: BaseException, host: str, port: int, *, what: str, setting: str) -> ListenAddressError:
    """The one-line explanation of a failed bind (or name lookup) of host:port."""
    address = f"[{host}]:{port}" if ":" in host else f"{host or '*'}:{port}"
    head = f"{what} cannot listen on {address}"
    if isinstance(exc, socket.gaierror | UnicodeError):
        why = exc.strerror if isinstance(exc, socket.gaierror) and exc.strerror else str(exc)
        return ListenAddressError(f"{head}: the host name {host!r} does not resolve ({why}); use an address of "
                                  f"this machine ({setting})")
    code = exc.errno if isinstance(exc, OSError) else None
    if code == errno.EADDRINUSE:
        advice = f"the port is in use by another program (or another otpki); stop it or choose another port ({setting})"
    elif code == errno.EADDRNOTAVAIL:
        advice = (f"{host} is not an address of this machine; use one of its addresses, 127.0.0.1 for this "
                  f"machine only or 0.0.0.0 for all ({setting})")
    elif code == errno.EACCES:
        advice = (f"permission denied; ports below 1024 need privileges, choose a port from 1024 up "
                  f"({setting})")
    else:
        advice = f"{getattr(exc, 'strerror', None) or exc} ({setting})"
    return ListenAddressError(f"{head}: {advice}")


def bind_failure(exc: BaseException) -> OSError | None:
    """The failed bind behind a server's start-up error, if that is what it was.

    amqtt wraps it in BrokerError; asyncio's bind error carries no file name, which tells it apart from a
    file the server could not read or write on the way (those keep their own message).
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            if isinstance(current, socket.gaierror) or (current.filename is None and current.errno in _BIND_ERRORS):
                return current
            return None
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


_BIND_ERRORS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})
