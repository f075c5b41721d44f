"""The overview is recomputed at most every max_age_s; a stale one is served while one recomputation runs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from otpki.web import overview_cache, views


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_overview_is_reused_then_refreshed_in_the_background(monkeypatch: pytest.MonkeyPatch) -> None:
    computed: list[int] = []
    release = asyncio.Event()
    loop = asyncio.get_running_loop()

    def fake_overview(engine: Any, *, probe: bool) -> Any:
        computed.append(len(computed) + 1)
        if len(computed) == 2:  # the background recomputation waits until the test lets it finish
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=20)
        return f"overview {len(computed)}"

    monkeypatch.setattr(views, "overview", fake_overview)
    ticks = Ticks()
    cache = overview_cache.OverviewCache(engine=None, max_age_s=30, clock=ticks)  # type: ignore[arg-type]
    first = await asyncio.gather(cache.get(), cache.get(), cache.get())
    assert first == ["overview 1"] * 3 and computed == [1]  # concurrent first requests: one computation
    ticks.now = 29
    assert await cache.get() == "overview 1" and computed == [1]
    ticks.now = 31
    assert await cache.get() == "overview 1"  # stale, served at once; a recomputation started
    assert await cache.get() == "overview 1"  # still running: no second one
    release.set()
    assert cache._refresh is not None
    await asyncio.wait_for(cache._refresh, timeout=20)
    assert await cache.get() == "overview 2" and computed == [1, 2]


async def test_max_age_zero_computes_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(views, "overview", lambda engine, *, probe: calls.append(1) or len(calls))
    cache = overview_cache.OverviewCache(engine=None, max_age_s=0)  # type: ignore[arg-type]
    assert [await cache.get(), await cache.get()] == [1, 2]
