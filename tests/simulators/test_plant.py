"""`python -m simulators.plant` starts N PLCs on consecutive ports and stops them on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from asyncua import Client

from trustlists.testing import free_port_block, read_line_until

ROOT = Path(__file__).resolve().parents[2]


def test_plant_command(tmp_path: Path) -> None:
    base = free_port_block(2)
    proc = subprocess.Popen([sys.executable, "-m", "simulators.plant", "--plcs", "2", "--base-port", str(base),
                             "--root", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OTPKI_PLC_ADMIN_PASSWORD": "pw-for-test"})
    try:
        assert proc.stdout is not None
        line = read_line_until(proc.stdout, lambda _text: True, "the plant's first line", timeout=60)
        assert line.strip() == f"READY {base} 2", (line, proc.stderr.read() if proc.poll() is not None else "")

        async def names() -> list[str]:
            out = []
            for port in (base, base + 1):
                endpoints = await Client(f"opc.tcp://127.0.0.1:{port}/plc").connect_and_get_server_endpoints()
                out.append(endpoints[0].Server.ApplicationUri)
            return out

        assert asyncio.run(names()) == ["urn:otpki:plc:plc-1", "urn:otpki:plc:plc-2"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0


def test_plant_needs_a_password(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OTPKI_PLC_ADMIN_PASSWORD"}
    res = subprocess.run([sys.executable, "-m", "simulators.plant", "--plcs", "1", "--base-port", "1",
                          "--root", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 2 and "OTPKI_PLC_ADMIN_PASSWORD" in res.stderr


def test_plants_started_together_look_for_ports_in_different_places() -> None:
    """Every plant scanned from the same first port: two started at once on one host (a demo and a benchmark, two
    test runs) found the same free block and one of them failed to bind it."""
    assert len({free_port_block(5) for _ in range(20)}) > 1
