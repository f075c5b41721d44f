"""The supervisor: starts every enabled part, restarts one that crashes (with backoff), stops all on request.

A part is anything with `start()` (returns once it serves, raises if it cannot), `wait()` (returns or raises when
it stops serving on its own: a crash) and `stop()`. The supervisor never lets one part's failure reach another:
a part that fails to start or crashes is stopped, reported (a log line, an audit record `serve.part_failed`, its
status: what /readyz and the console read) and started again after a backoff that doubles up to a limit and
starts over once the part ran for a while. Stopping gives each part a bounded time, in reverse start order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel

from trustlists.clock import utcnow

log = logging.getLogger(__name__)

PartState = Literal["starting", "running", "backoff", "stopping", "stopped"]
STABLE_AFTER_S = 60.0  # a part that ran this long starts its backoff over after its next crash


class Part(Protocol):
    name: str

    async def start(self) -> None: ...

    async def wait(self) -> None: ...

    async def stop(self) -> None: ...


class PartStatus(BaseModel):
    """One part as the supervisor sees it (the console's status page, /readyz)."""

    name: str
    state: PartState
    restarts: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None
    running_since: datetime | None = None
    next_start_at: datetime | None = None
    detail: str | None = None  # what the part serves (an address), once running


class InjectedFault(Exception):
    """A crash made on purpose through the test-only fault hook (OTPKI_SERVE_TEST_FAULTS)."""


ReportFailure = Callable[[str, str, int], None]  # (part, error, restarts): the audit record


class _Slot:
    def __init__(self, part: Part) -> None:
        self.part = part
        self.status = PartStatus(name=part.name, state="starting")
        self.task: asyncio.Task[None] | None = None
        self.fault: asyncio.Future[None] | None = None
        self.first_start = asyncio.Event()  # set after the first start attempt, succeeded or not


class Supervisor:
    def __init__(self, parts: list[Part], *, initial_backoff_s: float = 1.0, max_backoff_s: float = 60.0,
                 stop_timeout_s: float = 10.0, on_failure: ReportFailure | None = None,
                 describe: Callable[[Part], str | None] | None = None) -> None:
        self._slots: list[_Slot] = []
        for part in parts:
            self.add(part)
        self._initial = initial_backoff_s
        self._max = max_backoff_s
        self._stop_timeout = stop_timeout_s
        self._on_failure = on_failure
        self._describe = describe
        self._stopping = asyncio.Event()

    def add(self, part: Part) -> None:
        """One more part, started after those before it (before `start()` only)."""
        if any(slot.part.name == part.name for slot in self._slots):
            raise ValueError(f"part names must be unique: {part.name} is there already")
        self._slots.append(_Slot(part))

    # -- what the web layer reads ----------------------------------------------------------------------------------
    def status(self) -> list[PartStatus]:
        return [slot.status.model_copy() for slot in self._slots]

    def not_running(self) -> list[PartStatus]:
        return [s for s in self.status() if s.state != "running"]

    # -- running ---------------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start every part (in order, each in its own supervising task) and return once each is running or, having
        failed its first start, waiting for its restart."""
        for slot in self._slots:
            slot.task = asyncio.create_task(self._supervise(slot), name=f"otpki-serve:{slot.part.name}")
            await slot.first_start.wait()  # in order: the web listener's /readyz sees the parts before it

    async def stop(self) -> None:
        """Stop every part, last started first; each gets `stop_timeout_s`, then its task is cancelled."""
        self._stopping.set()
        for slot in reversed(self._slots):
            task, slot.task = slot.task, None
            if task is None:
                continue
            try:
                # The part's own stop() has stop_timeout_s (in _supervise); this bounds the rest of its task.
                await asyncio.wait_for(asyncio.shield(task), timeout=self._stop_timeout + 1)
            except TimeoutError:
                log.warning("%s did not stop within %.0f s; cancelled", slot.part.name, self._stop_timeout)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            except Exception:  # its supervising task failed: nothing left to stop
                log.exception("the supervision of %s ended with an error", slot.part.name)
            slot.status = slot.status.model_copy(update={"state": "stopped", "next_start_at": None})

    def inject_fault(self, name: str) -> bool:
        """Make the running part `name` crash (test-only hook); False if there is no such running part."""
        for slot in self._slots:
            if slot.part.name == name and slot.fault is not None and not slot.fault.done():
                slot.fault.set_exception(InjectedFault(f"fault injected into {name} (test hook)"))
                return True
        return False

    async def _supervise(self, slot: _Slot) -> None:
        part = slot.part
        failures = 0
        while not self._stopping.is_set():
            self._set(slot, state="starting", next_start_at=None)
            started = time.monotonic()
            error: str | None = None
            slot.fault = asyncio.get_running_loop().create_future()
            try:
                await self._until_stopping(part.start())
                if self._stopping.is_set():
                    break
                self._set(slot, state="running", running_since=utcnow(),
                          detail=self._describe(part) if self._describe else None)
                slot.first_start.set()
                log.info("%s running", part.name)
                await self._until_stopping(self._watch(part, slot.fault))
                if not self._stopping.is_set():
                    error = "stopped on its own"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            finally:
                self._set(slot, state="stopping")
                await self._stop_part(part)
            if self._stopping.is_set():
                break
            assert error is not None
            if time.monotonic() - started >= STABLE_AFTER_S:
                failures = 0
            failures += 1
            delay = min(self._max, self._initial * 2 ** (failures - 1))
            restarts = slot.status.restarts + 1
            log.error("%s failed: %s; restarting in %.1f s (restart %d)", part.name, error, delay, restarts)
            self._set(slot, state="backoff", restarts=restarts, last_error=error, last_error_at=utcnow(),
                      running_since=None,
                      next_start_at=datetime.fromtimestamp(time.time() + delay, tz=utcnow().tzinfo))
            if self._on_failure is not None:
                try:
                    self._on_failure(part.name, error, restarts)
                except Exception:  # the report must not keep the part down (a locked store): logged, retried next time
                    log.exception("could not record the failure of %s", part.name)
            slot.first_start.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):  # not wait_for: it can swallow a cancel on 3.11
                    await self._stopping.wait()
        self._set(slot, state="stopped", next_start_at=None)
        slot.first_start.set()

    @staticmethod
    async def _watch(part: Part, fault: asyncio.Future[None]) -> None:
        waiting = asyncio.ensure_future(part.wait())
        try:
            await asyncio.wait({waiting, fault}, return_when=asyncio.FIRST_COMPLETED)
            if fault.done():
                fault.result()
            waiting.result()
        finally:
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await waiting

    async def _until_stopping(self, work: Awaitable[None]) -> None:
        """Run `work` until it ends or the supervisor is asked to stop, whichever comes first."""
        task = asyncio.ensure_future(work)
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()
        finally:
            stopping.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _stop_part(self, part: Part) -> None:
        try:
            await asyncio.wait_for(part.stop(), timeout=self._stop_timeout)
        except TimeoutError:
            log.warning("%s did not stop within %.0f s", part.name, self._stop_timeout)
        except Exception:
            log.exception("%s failed while stopping", part.name)

    @staticmethod
    def _set(slot: _Slot, **changes: object) -> None:
        slot.status = slot.status.model_copy(update=changes)
