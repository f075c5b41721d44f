"""trustlists.testing.free_port: the one way the tests get a port for a server that cannot bind port 0 itself."""

from __future__ import annotations

import socket
from pathlib import Path

from trustlists.testing import free_port


def test_free_ports_come_from_outside_the_ephemeral_range_and_are_free() -> None:
    """A port from the ephemeral range goes to the next outgoing connection on the machine as readily as to the
    server it was meant for (a Mosquitto test failed with 'Address already in use')."""
    low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = {free_port() for _ in range(20)}
    assert not any(low <= p <= high for p in ports), sorted(ports)
    assert len(ports) > 1  # picked at random: two tests asking at once get different ports
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free: a server can take it
