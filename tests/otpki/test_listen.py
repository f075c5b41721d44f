"""The listen-address check and the explanation of a bind that fails later (pure logic, real sockets)."""

from __future__ import annotations

import errno
import socket

import pytest
from amqtt.errors import BrokerError

from otpki.listen import Listen, ListenAddressError, check_listen_address

LISTEN = Listen("127.0.0.1", 4840, what="the GDS", setting="--endpoint")


def test_a_free_port_and_port_zero_pass() -> None:
    check_listen_address("127.0.0.1", 0, what="the broker", setting="--port", allow_any_port=True)
    with pytest.raises(ListenAddressError, match="ports are 1-65535"):
        check_listen_address("127.0.0.1", 0, what="the GDS", setting="--endpoint")


def test_the_probe_releases_the_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    check_listen_address("127.0.0.1", port, what="the GDS", setting="--endpoint")
    with socket.socket() as again:  # asyncio binds with SO_REUSEADDR; a plain bind shows nothing is left open
        again.bind(("127.0.0.1", port))


def test_a_bind_failure_wrapped_by_amqtt_is_explained() -> None:
    cause = OSError(errno.EADDRINUSE, "error while attempting to bind on address ('127.0.0.1', 4840): in use")
    with pytest.raises(ListenAddressError, match=r"cannot listen on 127.0.0.1:4840: the port is in use"), \
            LISTEN.explained():
        raise BrokerError("Broker instance can't be started") from cause


def test_file_errors_and_other_failures_pass_unchanged() -> None:
    with pytest.raises(PermissionError), LISTEN.explained():
        raise PermissionError(errno.EACCES, "Permission denied", "/srv/pki/gds/own/cert.der")
    with pytest.raises(RuntimeError), LISTEN.explained():
        raise RuntimeError("not a bind")
