"""The supervisor's logic with stand-in parts (unit tests): restart with backoff, isolation, bounded stop.

The same behaviour with the real parts in a real `otpki serve` process: tests/otpki/test_serve.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from otpki.serve.supervisor import Supervisor
from trustlists.testing import eventually

Make = Callable[..., Supervisor]


class FakePart:
    def __init__(self, name: str, *, fail_starts: int = 0, hang_on_stop: bool = False) -> None:
        self.name = name
        self.starts = 0
        self.stops = 0
        self._fail_starts = fail_starts
        self._hang_on_stop = hang_on_stop
        self._crash: asyncio.Future[None] | None = None

    async def start(self) -> None:
        self.starts += 1
        if self.starts <= self._fail_starts:
            raise OSError(f"{self.name} cannot start ({self.starts})")
        self._crash = asyncio.get_running_loop().create_future()

    async def wait(self) -> None:
        assert self._crash is not None
        await self._crash

    def crash(self, why: str) -> None:
        assert self._crash is not None
        self._crash.set_exception(RuntimeError(why))

    async def stop(self) -> None:
        self.stops += 1
        if self._hang_on_stop:
            await asyncio.Event().wait()


@pytest.fixture
async def supervised() -> AsyncIterator[Callable[..., Supervisor]]:
    """Supervisor(...) that is stopped when the test ends, passed or failed (no part left backing off)."""
    made: list[Supervisor] = []

    def make(*args: object, **kwargs: object) -> Supervisor:
        made.append(Supervisor(*args, **kwargs))  # type: ignore[arg-type]  # (the test passes Supervisor's own)
        return made[-1]

    yield make
    for sup in made:
        await asyncio.wait_for(sup.stop(), timeout=10)


async def test_a_crashed_part_is_stopped_reported_and_restarted_while_the_others_run(supervised: Make) -> None:
    a, b = FakePart("a"), FakePart("b")
    reports: list[tuple[str, str, int]] = []
    sup = supervised([a, b], initial_backoff_s=0.01, on_failure=lambda *r: reports.append(r))
    await sup.start()
    assert [s.state for s in sup.status()] == ["running", "running"]
    a.crash("boom")
    await eventually(lambda: a.starts == 2 and sup.status()[0].state == "running", "a restarted")
    status = {s.name: s for s in sup.status()}
    assert status["a"].restarts == 1 and status["a"].last_error == "RuntimeError: boom"
    assert a.stops == 1  # stopped before it was started again: no half-dead part left behind
    assert (b.starts, b.stops, status["b"].restarts, status["b"].state) == (1, 0, 0, "running")
    assert reports == [("a", "RuntimeError: boom", 1)]
    await sup.stop()
    assert [s.state for s in sup.status()] == ["stopped", "stopped"] and a.stops == 2 and b.stops == 1


async def test_a_part_that_cannot_start_is_retried_with_a_growing_backoff(supervised: Make) -> None:
    flaky = FakePart("flaky", fail_starts=3)
    sup = supervised([flaky], initial_backoff_s=0.01, max_backoff_s=10)
    await sup.start()  # returns after the first attempt, failed or not
    await eventually(lambda: sup.status()[0].state == "running", "flaky running", timeout=10)
    assert flaky.starts == 4 and sup.status()[0].restarts == 3
    assert "cannot start (3)" in (sup.status()[0].last_error or "")
    await sup.stop()


async def test_backoff_waits_are_what_the_status_announces(supervised: Make) -> None:
    part = FakePart("p", fail_starts=1)
    sup = supervised([part], initial_backoff_s=60, max_backoff_s=60)
    await sup.start()
    status = sup.status()[0]
    assert status.state == "backoff" and status.next_start_at is not None and status.last_error_at is not None
    assert 59 <= (status.next_start_at - status.last_error_at).total_seconds() <= 61
    await sup.stop()  # a stop during the backoff ends it at once, without starting the part again
    assert part.starts == 1 and sup.status()[0].state == "stopped"


async def test_stop_is_bounded_when_a_part_hangs_while_stopping(supervised: Make) -> None:
    stuck, fine = FakePart("stuck", hang_on_stop=True), FakePart("fine")
    sup = supervised([fine, stuck], stop_timeout_s=0.2)
    await sup.start()
    await asyncio.wait_for(sup.stop(), timeout=5)  # 0.2 s for the stuck part, then it is given up
    assert fine.stops == 1 and [s.state for s in sup.status()] == ["stopped", "stopped"]


async def test_injected_fault_crashes_only_the_named_running_part(supervised: Make) -> None:
    a, b = FakePart("a"), FakePart("b")
    sup = supervised([a, b], initial_backoff_s=0.01)
    await sup.start()
    assert not sup.inject_fault("nope")
    assert sup.inject_fault("b")
    await eventually(lambda: b.starts == 2 and sup.status()[1].state == "running", "b restarted")
    assert "fault injected into b" in (sup.status()[1].last_error or "") and a.starts == 1
    await sup.stop()


def test_part_names_are_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        Supervisor([FakePart("x"), FakePart("x")])
