"""When each device was last seen on this broker, kept in the engine's store (the console's Devices page).

The broker knows its live sessions and, since it started, when each connection ended; both go with it when it
stops. This writer keeps a device's last-seen time in the store instead (Registry.record_last_seen), so a restart
or another instance on the same store shows it too: at once when a device connects or disconnects (the broker sets
`presence_changed`), and at most once a minute per device while it stays connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime

from trustlists.blocking import run_blocking
from trustlists.engine import Engine
from trustlists.errors import OtpkiError

_log = logging.getLogger(__name__)
REFRESH_EVERY_S = 60.0


class LastSeenWriter:
    def __init__(self, engine: Engine, group: str, *, online: Callable[[], dict[str, datetime]],
                 disconnected: Callable[[], dict[str, datetime]], changed: asyncio.Event,
                 every_s: float = REFRESH_EVERY_S, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._engine, self._group = engine, group
        self._online, self._disconnected, self._changed = online, disconnected, changed
        self._every_s = every_s
        self._monotonic = monotonic
        self._written: dict[str, tuple[datetime, float]] = {}  # device -> (time stored, monotonic when stored)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop, after storing the live sessions as seen now (the broker's shutdown ends them)."""
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():  # stop() itself was cancelled: pass it on
                    raise
        now = self._engine.now()
        with contextlib.suppress(OtpkiError):  # a store that is down: the last minute's writes stand
            await self._write({device: now for device in self._online()})

    def due(self) -> dict[str, datetime]:
        """What is not stored yet: connects and disconnects newer than the device's stored time, and devices still
        connected whose time was stored a minute ago or more (as seen now)."""
        now, tick = self._engine.now(), self._monotonic()
        due: dict[str, datetime] = {}
        for device, since in self._online().items():
            stored = self._written.get(device)
            if stored is None or stored[0] < since:
                due[device] = since
            elif tick - stored[1] >= self._every_s:
                due[device] = max(now, stored[0])
        for device, at in self._disconnected().items():
            stored = self._written.get(device)
            if stored is None or stored[0] < at:
                due[device] = max(at, due.get(device, at))
        return due

    async def _write(self, seen: dict[str, datetime]) -> None:
        if not seen:
            return
        await run_blocking(self._engine.registry.record_last_seen, self._group, seen)
        tick = self._monotonic()
        for device, at in seen.items():
            self._written[device] = (at, tick)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._every_s / 6):  # not wait_for: see live_sessions
                    await self._changed.wait()
            self._changed.clear()
            try:
                await self._write(self.due())
            except OtpkiError as exc:  # the store is busy or down: try again at the next tick
                _log.warning("last-seen times of MQTT devices not stored: %s", exc.message)
