"""Replay memory and rate limits that every service and process on one store shares, and that survive restarts.

A protocol front (the MQTT enrollment service today, EST tomorrow) asks `admit` once per request that it has
already authenticated: was this request id seen for this subject, and does the subject have budget left?
Both questions and the answer's bookkeeping are one store transaction, so two services (the embedded broker's
and the Mosquitto side's, or two processes) can never both accept one request, nor together exceed one budget.

Only authenticated requests get here: flood shedding happens before, in memory, in the front (a store write
per flooded message would turn a flood into disk traffic). Rows are dropped once they stop mattering (request
ids after their timestamp window, buckets once full again) and an hour more (FORGET_GRACE_S: hosts' clocks
differ), in the same transactions, through an index.
Neither is audited: they are bookkeeping of requests, not trust decisions (what a request led to is audited).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from trustlists.clock import to_epoch
from trustlists.context import EngineContext
from trustlists.errors import InvalidInput, RequestNotAdmitted
from trustlists.store.base import StoreReader, StoreWriter

__all__ = ["RateLimit", "RequestGuard", "Verdict"]

Verdict = Literal["ok", "replay", "rate_limited"]

# Rows are dropped this long after they stopped mattering by the clock of the instance that drops them: the
# instances of one store run on several hosts, and one whose clock is ahead of the others' must not forget a
# request id that another instance still accepts a replay of (its own window, by its own clock, is still open).
# The clock skew between hosts this tolerates; an hour of request ids is little to keep.
FORGET_GRACE_S = 3600


class RateLimit(BaseModel):
    """A token bucket: `burst` requests at once, then `refill_per_s` requests per second."""

    model_config = ConfigDict(frozen=True)

    burst: int = Field(ge=1)
    refill_per_s: float = Field(gt=0)


class RequestGuard:
    """`engine.request_guard`."""

    def __init__(self, ctx: EngineContext) -> None:
        self._ctx = ctx

    def admit(self, scope: str, subject: str, request_id: str, *, expires_at: datetime, limit: RateLimit) -> Verdict:
        """Check and record one request atomically.

        "replay": `request_id` was admitted for `subject` in `scope` before and has not expired (nothing is
        consumed); "rate_limited": the subject's bucket is empty (the id is not remembered, so the same signed
        request may be retried); "ok": a token was taken and the id is remembered until `expires_at`.
        """
        with self._ctx.store.transaction() as tx:
            return self.admit_in(tx, scope, subject, request_id, expires_at=expires_at, limit=limit)

    def admit_in(self, tx: StoreWriter, scope: str, subject: str, request_id: str, *, expires_at: datetime,
                 limit: RateLimit) -> Verdict:
        """`admit` inside the caller's transaction: a front that records the request with what it leads to (an
        issued certificate) makes both one commit, so neither happens without the other. The caller rolls back
        on anything but "ok" (nothing is written then anyway)."""
        if not scope or not subject or not request_id:
            raise InvalidInput("scope, subject and request id are required")
        now = self._ctx.clock()
        now_us = int(now.timestamp() * 1_000_000)
        # Two instances admitting for one subject take turns: one sees the other's request id and bucket.
        tx.lock("request_guard", f"{scope}\x00{subject}")
        tx.forget_expired(to_epoch(now) - FORGET_GRACE_S)
        if tx.request_seen(scope, subject, request_id):
            return "replay"
        tokens = self._tokens(tx, scope, subject, limit, now_us)
        if tokens < 1.0:
            return "rate_limited"  # nothing taken, nothing written: the stored bucket still says the same
        tokens -= 1.0
        tx.remember_request(scope, subject, request_id, max(to_epoch(expires_at), to_epoch(now)))
        full_in_s = (limit.burst - tokens) / limit.refill_per_s
        tx.put_rate_bucket(scope, subject, tokens, now_us, to_epoch(now) + math.ceil(full_in_s) + 1)
        return "ok"

    def take(self, scope: str, subject: str, *, limit: RateLimit) -> bool:
        """Take a token from the subject's bucket (no request id: a login attempt); False when it is empty."""
        if not scope or not subject:
            raise InvalidInput("scope and subject are required")
        now = self._ctx.clock()
        now_us = int(now.timestamp() * 1_000_000)
        with self._ctx.store.transaction() as tx:
            tx.lock("request_guard", f"{scope}\x00{subject}")
            tx.forget_expired(to_epoch(now) - FORGET_GRACE_S)
            tokens = self._tokens(tx, scope, subject, limit, now_us)
            if tokens < 1.0:
                return False
            tokens -= 1.0
            full_in_s = (limit.burst - tokens) / limit.refill_per_s
            tx.put_rate_bucket(scope, subject, tokens, now_us, to_epoch(now) + math.ceil(full_in_s) + 1)
            return True

    def admitting(self, scope: str, subject: str, request_id: str, *, expires_at: datetime,
                  limit: RateLimit) -> Callable[[StoreWriter, object], None]:
        """An `in_transaction` hook for issuance (`authority.issue_from_csr`, `renew`, `bootstrap.enroll`): admits
        the request inside the issuing transaction, or raises RequestNotAdmitted (reason "replay" or
        "rate_limited"), which rolls the issuance back."""

        def admit(tx: StoreWriter, _issued: object) -> None:
            verdict = self.admit_in(tx, scope, subject, request_id, expires_at=expires_at, limit=limit)
            if verdict != "ok":
                raise RequestNotAdmitted(f"request {request_id} of {subject}: {verdict}", reason=verdict)

        return admit

    def peek(self, scope: str, subject: str, request_id: str, *, limit: RateLimit) -> Verdict:
        """What `admit` would answer now, from a read (nothing recorded): the cheap refusal before costly work
        (signing) whose transaction then admits for good with `admit_in`."""
        if not scope or not subject or not request_id:
            raise InvalidInput("scope, subject and request id are required")
        now_us = int(self._ctx.clock().timestamp() * 1_000_000)
        with self._ctx.store.read() as tx:
            if tx.request_seen(scope, subject, request_id):
                return "replay"
            return "ok" if self._tokens(tx, scope, subject, limit, now_us) >= 1.0 else "rate_limited"

    @staticmethod
    def _tokens(tx: StoreReader, scope: str, subject: str, limit: RateLimit, now_us: int) -> float:
        bucket = tx.get_rate_bucket(scope, subject)
        if bucket is None:
            return float(limit.burst)
        stored, stamp_us = bucket
        # A clock that went backwards earns nothing (and takes nothing away).
        elapsed = max(0.0, (now_us - stamp_us) / 1_000_000)
        return min(float(limit.burst), stored + elapsed * limit.refill_per_s)
