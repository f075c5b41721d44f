"""trustlists.testing.free_port: the one way the tests get a port for a server that cannot bind port 0 itself."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from trustlists.testing import free_port, free_port_block


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


def test_blocks_of_ports_for_a_plant_come_from_outside_the_ephemeral_range_and_are_free() -> None:
    """A plant's consecutive ports were scanned for from 42000 up, inside Linux's default ephemeral range
    (32768-60999), where any outgoing connection of the machine could take one before the plant bound it."""
    low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    bases = {free_port_block(5) for _ in range(20)}
    assert not any(low <= p <= high for base in bases for p in range(base, base + 5)), sorted(bases)
    assert len(bases) > 1
    for base in bases:
        for port in range(base, base + 5):
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))


def test_pytest_xdist_workers_pick_from_shares_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers picking at the same moment never get one port: the bind check only sees ports already bound,
    not one another worker picked a moment ago for a server still starting."""
    shares = []
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
        shares.append(({free_port() for _ in range(50)}, {free_port_block(5) for _ in range(20)}))
    (ports0, blocks0), (ports1, blocks1) = shares
    assert max(ports0 | blocks0) < min(ports1 | blocks1)
