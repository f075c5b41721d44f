"""What a broker listener spends on a connection before it knows who is there, and the bookkeeping to hold it.

Everything before an authenticated CONNECT is free for anyone who can reach the port: a TCP connection,
a TLS handshake, a CONNECT read into memory. `BrokerLimits` bounds each of them per listener (`[mqtt.limits]`
and `[mqtt.bootstrap_limits]` in otpki.toml); `UnauthenticatedSlots` counts the connections in that phase;
`ThrottledWarning` keeps a flood of refusals from becoming a flood of log lines.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MQTT_MAX_PACKET_SIZE", "BrokerLimits", "BrokerMode", "ThrottledWarning", "UnauthenticatedSlots"]

# MQTT 3.1.1 section 2.2.3: a remaining length of at most 268,435,455 behind a 1-byte type and a 4-byte length.
MQTT_MAX_PACKET_SIZE = 1 + 4 + 268_435_455

BrokerMode = Literal["standard", "bootstrap"]
"""standard: registered devices, their bootstrap enrollment and the enrollment service. bootstrap: only
bootstrap identities (confined to their enrollment topics) and the enrollment service."""


class BrokerLimits(BaseModel):
    """Limits of one broker listener otpki runs (the embedded broker, the bootstrap listener)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect_timeout_s: float = Field(
        10.0, gt=0, le=3600,
        description="Seconds from TCP accept until the TLS handshake is done and the CONNECT has arrived; "
                    "a connection that is not that far by then is closed")
    max_packet_size: int = Field(
        256 * 1024, ge=128, le=MQTT_MAX_PACKET_SIZE,
        description="Largest MQTT packet accepted, in bytes (fixed header included, as MQTT 5's Maximum "
                    "Packet Size counts); a larger one closes the connection before its body is read")
    max_unauthenticated: int = Field(
        256, ge=1,
        description="Connections at most between TCP accept and an authenticated CONNECT; one more is closed "
                    "at once")


class UnauthenticatedSlots:
    """A counter with a ceiling: one slot per connection from TCP accept to the end of its CONNECT's judgement.

    Single event loop, no awaits inside: a plain int is enough.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    def take(self) -> Slot | None:
        if self.in_use >= self.limit:
            return None
        self.in_use += 1
        return Slot(self)


class Slot:
    """One taken slot; `release` is idempotent so every exit path may call it."""

    def __init__(self, slots: UnauthenticatedSlots) -> None:
        self._slots: UnauthenticatedSlots | None = slots

    def release(self) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            slots.in_use -= 1


class ThrottledWarning:
    """Logs the first event of a kind, then at most one line per `every_s` with how many were not logged.

    `counts` keeps the exact number of events per kind whatever was logged (tests, bench, doctor).
    """

    def __init__(self, logger: logging.Logger, every_s: float = 5.0) -> None:
        self._logger = logger
        self._every_s = every_s
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()

    def warn(self, kind: str, message: str, *args: object) -> None:
        self.counts[kind] += 1
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._every_s:
            self._suppressed[kind] += 1
            return
        self._last[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += f" ({suppressed} more {kind} events since the last report)"
        self._logger.warning(message, *args, stacklevel=2)
