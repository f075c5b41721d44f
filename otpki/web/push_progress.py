"""Live progress of "push now" as server-sent events (text/event-stream, the WHATWG HTML "server-sent events" format).

Events, each one `event:` line and one `data:` line of JSON:
- `step`: a stage of the push as it happens (`connecting`, `connect`, `write_trust_list`, `issue`,
  `update_certificate`, `apply_changes`, `reconnect`, `verify_certificate`, `verify_trust_list`...), with its OPC UA
  status and detail;
- `outcome`: the rollout's report for the target (delivered, not applied, or failed with its step and status code);
- `error`: the push could not run at all (`{"code", "message"}`, as the API's JSON errors).

The push runs as its own task: a browser that goes away stops hearing about it, but does not cut it off half-way (a
certificate written and its trust list not, the PLC worse off than either way); its result is recorded all the same.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from otpki.web.errors import from_engine
from trustlists.errors import OtpkiError

log = logging.getLogger(__name__)

StepListener = Callable[[dict[str, Any]], None]


class Pusher(Protocol):
    """What runs a push to one target now (the supervisor's push client). `on_step` hears each stage as a dict
    (`target_id`, `step`, `status`, `detail`); the JSON report it returns is passed through."""

    def __call__(self, target_id: str, *, on_step: StepListener | None = None) -> Awaitable[dict[str, Any]]: ...


_running: set[asyncio.Task[dict[str, Any]]] = set()  # pushes whose listener left: kept until they finish


def event(name: str, data: Any) -> bytes:
    # json.dumps escapes newlines, so one data line always holds the whole event.
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def push_events(pusher: Pusher, target_id: str) -> AsyncIterator[bytes]:
    """The event stream of one push: its steps as they come, then its outcome (or an error)."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.ensure_future(pusher(target_id, on_step=queue.put_nowait))
    _running.add(task)
    task.add_done_callback(_finished)
    getter: asyncio.Future[dict[str, Any]] | None = None
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                break
            yield event("step", getter.result())
        while not queue.empty():
            yield event("step", queue.get_nowait())
    finally:
        if getter is not None:
            getter.cancel()  # the listener left (or the push ended): the push task itself goes on
    exc = task.exception()
    if exc is None:
        yield event("outcome", task.result())
    elif isinstance(exc, OtpkiError):
        error = from_engine(exc)
        yield event("error", {"code": error.code, "message": error.message})
    else:
        yield event("error", {"code": "push_failed", "message": f"{type(exc).__name__}: {exc}"})


def _finished(task: asyncio.Task[dict[str, Any]]) -> None:
    _running.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.debug("push now ended in an error: %s", task.exception())
