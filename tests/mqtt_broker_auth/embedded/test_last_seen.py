"""The last-seen writer's throttle (pure logic, stub engine): a connect and a disconnect are stored at once, a device
that stays connected at most once a minute."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import cast

from mqtt_broker_auth.embedded.last_seen import LastSeenWriter
from trustlists.engine import Engine


class _Registry:
    def __init__(self) -> None:
        self.writes: list[dict[str, datetime]] = []

    def record_last_seen(self, group: str, seen: dict[str, datetime]) -> None:
        assert group == "mqtt-device"
        self.writes.append(dict(seen))


class _Engine:
    def __init__(self) -> None:
        self.at = datetime(2026, 1, 1, tzinfo=UTC)
        self.registry = _Registry()

    def now(self) -> datetime:
        return self.at


async def test_connects_and_disconnects_at_once_and_a_connected_device_once_a_minute() -> None:
    engine, tick = _Engine(), [0.0]
    online: dict[str, datetime] = {}
    gone: dict[str, datetime] = {}
    writer = LastSeenWriter(cast(Engine, engine), "mqtt-device", online=lambda: online, disconnected=lambda: gone,
                            changed=asyncio.Event(), monotonic=lambda: tick[0])

    async def step(seconds: float) -> dict[str, datetime]:
        engine.at += timedelta(seconds=seconds)
        tick[0] += seconds
        due = writer.due()
        await writer._write(due)
        return due

    online["pump-1"] = connected = engine.at
    assert await step(0) == {"pump-1": connected}
    assert await step(30) == {}  # still connected, stored 30 s ago
    assert await step(29) == {}
    assert await step(1) == {"pump-1": engine.at}  # a minute on
    assert await step(10) == {}
    del online["pump-1"]
    gone["pump-1"] = left = engine.at
    assert await step(0) == {"pump-1": left}  # the disconnect, at once
    assert await step(120) == {}  # nothing new: no more writes
    online["pump-1"] = back = engine.at  # a reconnect is new again at once
    assert await step(0) == {"pump-1": back}
    assert [list(w) for w in engine.registry.writes] == [["pump-1"]] * 4


async def test_stop_ends_the_writer_even_when_a_change_lands_with_the_cancel() -> None:
    """A device disconnecting as the broker stops sets `changed` in the same moment stop() cancels the writer. On
    Python 3.11, asyncio.wait_for drops a cancel that arrives as its inner wait completes (bpo-42130): the loop then
    ran on and stop() waited for it forever (an embedded broker that never stopped, in CI)."""
    engine = _Engine()
    changed = asyncio.Event()
    for _ in range(20):  # the inner wait's completion and the cancel in every order the loop can give them
        writer = LastSeenWriter(cast(Engine, engine), "mqtt-device", online=dict, disconnected=dict,
                                changed=changed)
        writer.start()
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the writer waits on `changed`
        changed.set()
        await asyncio.sleep(0)  # the inner wait completes; the waiting loop has not resumed yet
        stopping = asyncio.ensure_future(writer.stop())
        done, _ = await asyncio.wait({stopping}, timeout=30)  # a hang guard, not a timing
        assert done, "stop() did not return: the writer's loop swallowed the cancel"
        changed.clear()
