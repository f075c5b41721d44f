"""OPC UA endpoint URLs (OPC 10000-6 7.2: `opc.tcp://host:port/path`), checked before anything listens or connects.

asyncua accepts whatever `urlparse` makes of a string: `http://...` starts a server that speaks UA TCP on an
HTTP URL, a port past 65535 fails deep inside the bind with a traceback, a URL without a port binds a random
one. Settings and CLI options run through `parse_opc_tcp_url` instead, whose ValueError names the problem.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlsplit

SCHEME = "opc.tcp"
EXAMPLE = "opc.tcp://HOST:PORT/PATH, e.g. opc.tcp://127.0.0.1:4840/otpki/gds"


class OpcTcpAddress(NamedTuple):
    host: str
    port: int


def parse_opc_tcp_url(url: str) -> OpcTcpAddress:
    """Host and port of an opc.tcp URL; ValueError saying what is wrong with anything else."""
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError(f"endpoint {url!r} contains spaces or control characters; use {EXAMPLE}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # urlsplit: "Port out of range 0-65535", "Port could not be cast to integer value"
        raise ValueError(f"endpoint {url!r}: {_port_problem(str(exc))}; use {EXAMPLE}") from None
    if parts.scheme.lower() != SCHEME:
        scheme = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise ValueError(f"endpoint {url!r} has {scheme}; OPC UA binary endpoints are {EXAMPLE}")
    if not parts.hostname:
        raise ValueError(f"endpoint {url!r} names no host; use {EXAMPLE}")
    if parts.username is not None or parts.password is not None:
        # Not echoed: the URL would print the password.
        raise ValueError("an endpoint URL must not carry a user name or password; configure credentials instead")
    if port is None:
        raise ValueError(f"endpoint {url!r} names no port; use {EXAMPLE}")
    if port == 0:
        raise ValueError(f"endpoint {url!r}: port 0 is not a port clients can be told; use 1-65535")
    return OpcTcpAddress(parts.hostname, port)


def _port_problem(message: str) -> str:
    if "out of range" in message:
        return "the port is out of range (1-65535)"
    return "the port is not a number"
