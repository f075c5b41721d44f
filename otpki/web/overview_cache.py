"""The plant overview, recomputed at most every `max_age_s` seconds per app.

The counts come from the store's tallies (trustlists/store/tallies.py: tens of milliseconds at a million
certificates), but the overview also probes each CA key (a signature per CA). A dashboard opened by several people,
or left to reload, would repeat that for numbers that move slowly. So the overview is the engine's answer as of a
moment (the page shows when): a request finding it older than `max_age_s` gets it at once and starts one
recomputation in the background; only the first request of the app waits for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from otpki.web import views
from trustlists.blocking import run_blocking
from trustlists.engine import Engine


class OverviewCache:
    def __init__(self, engine: Engine, max_age_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._max_age_s = max_age_s
        self._clock = clock
        self._value: views.Overview | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()
        self._refresh: asyncio.Task[None] | None = None

    async def get(self) -> views.Overview:
        if self._value is None or self._max_age_s <= 0:
            async with self._lock:  # the first requests wait for one computation, not one each
                if self._value is None or self._max_age_s <= 0:
                    await self._compute()
        elif self._clock() - self._at > self._max_age_s and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.create_task(self._compute())
        assert self._value is not None
        return self._value

    async def _compute(self) -> None:
        started = self._clock()
        self._value = await run_blocking(views.overview, self._engine, probe=True)
        self._at = started
