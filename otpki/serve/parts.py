"""The engine-side parts of `otpki serve`: the GDS, the push scheduler and the CRL/revocation upkeep.

Each is a `Part` for the supervisor (otpki.serve.supervisor): `start()` returns once it serves, `wait()` ends
when it stops on its own (a crash), `stop()` ends it. The MQTT parts are in otpki.serve.mqtt, the web listener in
otpki.web.listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from otpki.config import Settings
from trustlists.engine import Engine

if TYPE_CHECKING:
    from opcua_gds.gds.server import GdsServer
    from opcua_gds.push.rollout import Rollout, RolloutReport

log = logging.getLogger(__name__)


async def new_rollout(eng: Engine, s: Settings) -> Rollout:
    """The push client with its own engine-issued identity (renewed when due), as `otpki push` uses it."""
    from opcua_gds.own_identity import chain_file, ensure_identity
    from opcua_gds.push.rollout import Rollout
    from trustlists.blocking import run_blocking

    settings = s.file.push
    cert, key = await run_blocking(ensure_identity, eng, s.data_dir / "push" / "own", name="otpki-push",
                                   application_uri=settings.application_uri, host="localhost")
    cert = await run_blocking(chain_file, eng, cert)  # sent with its CAs: PLCs that trust only the root accept it
    return Rollout(eng, client_cert_path=cert, client_key_path=key, client_app_uri=settings.application_uri,
                   credentials=settings.resolve, concurrency=settings.concurrency, timeout_s=settings.timeout_s,
                   lease_s=settings.lease_s)


async def _end(task: asyncio.Task[None] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
    if task is not None:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


class GdsPart:
    """The OPC UA GDS ([gds] endpoint), as `otpki gds serve` runs it (without its upkeep: MaintenancePart's)."""

    name = "gds"

    def __init__(self, eng: Engine, s: Settings) -> None:
        self._eng, self._s = eng, s
        self.server: GdsServer | None = None
        self._dead = asyncio.Event()

    @property
    def address(self) -> str:
        return self._s.file.gds.endpoint

    async def start(self) -> None:
        from opcua_gds.gds.server import GdsServer

        self.server = GdsServer(self._eng, self._s.file.gds, self._s.data_dir / "gds")
        await self.server.start()

    async def wait(self) -> None:
        await self._dead.wait()  # asyncua serves from its own tasks and reports no end of its own

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await server.stop()


class PushPart:
    """The push scheduler: every `[serve] push_interval_s`, push to every due target (`otpki push --every`)."""

    name = "push"

    def __init__(self, eng: Engine, s: Settings) -> None:
        self._eng, self._s = eng, s
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        rollout = await new_rollout(self._eng, self._s)
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(rollout.serve(interval_s=self._s.file.serve.push_interval_s,
                                                       stop=self._stop, on_report=_log_round))

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=self._s.file.serve.stop_timeout_s / 2)
            except (TimeoutError, Exception):
                await _end(task)  # a round in flight: its targets come back after their lease expires


def _log_round(report: RolloutReport) -> None:
    log.info("push round: %d delivered, %d trust list not applied, %d failed, %s s", report.delivered,
             report.not_applied, report.failed, report.seconds)
    for outcome in report.outcomes:
        if not outcome.ok:
            log.warning("push to %s failed: %s", outcome.address, outcome.error)


class MaintenancePart:
    """CRL re-signing (on the elected leader) and revocation refresh (everywhere): trustlists.maintenance."""

    name = "maintenance"

    def __init__(self, eng: Engine, s: Settings) -> None:
        self._eng, self._s = eng, s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from trustlists.maintenance import run_maintenance

        interval = self._s.file.serve.maintenance_interval_s
        self._task = asyncio.create_task(run_maintenance(self._eng, interval_s=interval, actor=self._s.actor()))

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await _end(task)  # cancelled, run_maintenance gives up the leader lease: the next instance takes over
