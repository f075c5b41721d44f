"""The demo's PLCs: simulators in this process for a tiny plant, in `python -m simulators.plant` workers otherwise.

Starting an asyncua server costs about a second of CPU (its standard address space is built node by node;
asyncua's `Server.init(shelf_file=...)` cache was measured slower here, ~2 s against ~1 s, so it is not
used). A PLC also makes an RSA-2048 key for every CSR it answers. So beyond a handful the PLCs run in
worker processes (at least two, at most 50 PLCs each, like bench/push_fleet.py): both cores work, and the
demo's own event loop stays free for the push client, the GDS and the broker. Either way PLC i is `plc-i`
on port base + i - 1, so targets and checks do not care where it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Callable
from pathlib import Path

from opcua_gds.access import AccessConfig, GdsRole, PasswordUser, hash_password
from simulators.plant_workers import chunks, start_workers, stop_workers, wait_ready
from simulators.plc import PlcSimulator
from trustlists.testing import free_port_block

PER_PROCESS = 50
IN_PROCESS_LIMIT = 4  # beyond this, worker processes: both cores build address spaces and make PLC keys
MIN_WORKERS = 2  # the machine the demo must run on has two cores
ADMIN_USER = "plc-admin"


class PlcPlant:
    def __init__(self, count: int, root: Path, password: str, *, host: str = "127.0.0.1",
                 in_process_limit: int = IN_PROCESS_LIMIT) -> None:
        self.count = count
        self.root = root
        self.host = host
        self._password = password
        self.in_process = count <= in_process_limit
        self.base_port = 0
        self._sims: list[PlcSimulator] = []
        self._workers: list[subprocess.Popen[str]] = []
        # At most PER_PROCESS PLCs per worker, and at least MIN_WORKERS workers, as evenly as it divides.
        self._chunks = chunks(count, per_process=PER_PROCESS, min_workers=MIN_WORKERS)

    def name(self, i: int) -> str:
        return f"plc-{i + 1}"

    def endpoint(self, i: int) -> str:
        return f"opc.tcp://{self.host}:{self.base_port + i}/plc"

    @property
    def worker_count(self) -> int:
        return 0 if self.in_process else len(self._chunks)

    @property
    def access(self) -> AccessConfig:
        return AccessConfig(users=[PasswordUser(name=ADMIN_USER, password_hash=hash_password(self._password),
                                                roles=[GdsRole.SECURITY_ADMIN])])

    async def start(self, on_started: Callable[[int], None] | None = None) -> None:
        self.base_port = free_port_block(self.count, self.host)
        if self.in_process:
            await self._start_in_process(on_started)
        else:
            await self._start_workers(on_started)

    async def _start_in_process(self, on_started: Callable[[int], None] | None) -> None:
        access = self.access
        self._sims = [PlcSimulator(self.name(i), self.endpoint(i), self.root / self.name(i), access)
                      for i in range(self.count)]

        async def one(sim: PlcSimulator) -> None:
            await sim.start()
            if on_started is not None:
                on_started(1)

        await asyncio.gather(*(one(s) for s in self._sims))

    async def _start_workers(self, on_started: Callable[[int], None] | None) -> None:
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self._workers = start_workers(self._chunks, base_port=self.base_port, root=self.root, password=self._password,
                                      admin=ADMIN_USER, host=self.host, log_dir=logs)
        try:
            await wait_ready(self._workers, [n for _s, n in self._chunks], on_started)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; see {logs}") from None

    def factory_certificate(self, i: int) -> bytes:
        """The certificate PLC i presents out of the box (DER), from its PKI folder, where the worker wrote it
        before it reported ready. The demo plays the commissioning engineer who reads each PLC's fingerprint
        from its display, so that the targets are pinned at registration instead of trusted on first use."""
        certs = sorted((self.root / self.name(i) / "own" / "certs").glob("*.der"))
        if len(certs) != 1:
            raise RuntimeError(f"{self.name(i)} has {len(certs)} own certificates in {self.root / self.name(i)}; "
                               "expected its factory certificate only")
        return certs[0].read_bytes()

    async def stop(self) -> None:
        sims, self._sims = self._sims, []
        if sims:
            # A server with sessions still attached can take long to wind down; stopping must not hang the demo.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(s.stop() for s in sims), return_exceptions=True), 20)
        workers, self._workers = self._workers, []
        if workers:
            await asyncio.to_thread(stop_workers, workers)
