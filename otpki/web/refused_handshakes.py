"""The audit of client certificates the HTTPS listener refused in the TLS handshake (a foreign CA's certificate
presented to EST or the console), rate-limited so that a flood cannot fill the audit log.

The handshake refuses such a certificate before any HTTP request exists (otpki/web/_uvicorn_compat.py reports it),
so this is the only trace an operator gets of the attempt. Per window of `window_s` seconds, the first
`per_window` refusals are audited one by one (`web.tls_refused`: peer address and port, OpenSSL's verify code and
message, the TLS alert sent); the rest are counted per peer address and audited as one `web.tls_refused_suppressed`
record when the window ends (or the listener stops): at most per_window + 1 records per window, whatever the flood.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from trustlists.blocking import run_blocking
from trustlists.errors import OtpkiError

if TYPE_CHECKING:
    from otpki.web._uvicorn_compat import RefusedHandshake
    from trustlists.engine import Engine

log = logging.getLogger(__name__)

ACTION = "web.tls_refused"
SUPPRESSED_ACTION = "web.tls_refused_suppressed"
_PEERS_LISTED = 20  # the busiest peers named in a suppressed-count record


class RefusedHandshakeAudit:
    """`on_refused` of the HTTPS listener; runs on the listener's event loop."""

    def __init__(self, engine: Engine, listener: str, *, per_window: int = 10, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._listener = listener
        self._per_window = per_window
        self._window_s = window_s
        self._clock = clock
        self._window_start: float | None = None
        self._written = 0
        self._suppressed: Counter[str] = Counter()
        self._suppressed_since: datetime | None = None
        self._flush_handle: asyncio.TimerHandle | None = None
        self._writes: set[asyncio.Task[None]] = set()

    def __call__(self, refused: RefusedHandshake) -> None:
        now = self._clock()
        if self._window_start is None or now - self._window_start >= self._window_s:
            self._end_window()
            self._window_start = now
        log.warning("refused a TLS client certificate from %s:%d: %s (alert %s)", refused.peer, refused.port,
                    refused.reason, refused.alert)
        if self._written < self._per_window:
            self._written += 1
            self._write(f"tls-client:{refused.peer}", ACTION, {
                "listener": self._listener, "peer": refused.peer, "port": refused.port, "reason": refused.reason,
                "verify_code": refused.verify_code, "alert": refused.alert})
            return
        if not self._suppressed:
            self._suppressed_since = datetime.now(UTC)
            delay = max(0.0, self._window_start + self._window_s - now) if self._window_start is not None else 0.0
            self._flush_handle = asyncio.get_running_loop().call_later(delay, self._end_window)
        self._suppressed[refused.peer] += 1

    async def close(self) -> None:
        """Audit what is still counted and wait for the records being written (the listener stops)."""
        self._end_window()
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    def _end_window(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._suppressed:
            count = sum(self._suppressed.values())
            self._write("otpki", SUPPRESSED_ACTION, {
                "listener": self._listener, "count": count,
                "peers": dict(self._suppressed.most_common(_PEERS_LISTED)),
                "since": self._suppressed_since.isoformat() if self._suppressed_since else None,
                "until": datetime.now(UTC).isoformat(), "window_s": self._window_s,
                "audited_per_window": self._per_window})
        self._suppressed = Counter()
        self._suppressed_since = None
        self._written = 0
        self._window_start = None

    def _write(self, actor: str, action: str, details: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._record(actor, action, details))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _record(self, actor: str, action: str, details: dict[str, Any]) -> None:
        try:
            await run_blocking(self._engine.record_event, actor=actor, action=action, subject=self._listener,
                               details=details)
        except OtpkiError:  # the refusal stands; a store that cannot take the record is logged
            log.exception("could not audit a refused TLS handshake")
