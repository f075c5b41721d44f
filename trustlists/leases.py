"""Leases: which otpki instance does a piece of work that only one may do at a time.

Several instances on one store (PostgreSQL, any number of hosts) share work: a push target is pushed by one
scheduler at a time, the singleton work (CRL re-signing, maintenance) runs on one elected leader. A lease is a
row in the store: a name ("push-target:<id>", "leader:maintenance"), its holder (an instance id) and when it
expires. Expiry is read from the store's clock (the database server's `clock_timestamp()` on PostgreSQL), so a
host whose clock is off neither steals a live lease nor keeps a dead one. The holder renews the lease while it
works; an instance that dies (kill -9, a lost host) stops renewing, and once the lease expired another instance
takes it over. A takeover is audited (whose lease was taken, and how long after it expired); renewals, fresh
acquisitions and releases are bookkeeping, like the request guard's rows, and are not.

Why a lease row and not a session-level advisory lock on PostgreSQL: it works the same on both backends, its
expiry is explicit (an advisory lock of a host that vanished without closing its TCP connection stays held until
the server's keepalive notices, which by default takes hours), the holder is visible to every instance and to
the operator, and no connection has to be held out of the pool for the lock's lifetime.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta

from pydantic import BaseModel

from trustlists import audit
from trustlists.context import EngineContext
from trustlists.errors import InvalidInput
from trustlists.store.rows import LeaseRow

__all__ = ["LEADER_MAINTENANCE", "Lease", "Leases", "new_instance_id", "push_target_lease"]

LEADER_MAINTENANCE = "leader:maintenance"


def push_target_lease(target_id: str) -> str:
    return f"push-target:{target_id}"


def new_instance_id() -> str:
    """Unique per process and readable by an operator: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease(BaseModel):
    name: str
    holder: str
    expires_in: timedelta  # from the moment the store answered
    taken_over_from: str | None = None  # this acquisition took an expired lease of another instance


class Leases:
    """`engine.leases`."""

    def __init__(self, ctx: EngineContext, instance_id: str) -> None:
        self._ctx = ctx
        self.instance_id = instance_id

    def acquire(self, name: str, *, ttl: timedelta, actor: str) -> Lease | None:
        """Take or renew the lease `name` for this instance for `ttl`; None while another instance holds it.

        One transaction under a lock on the name: two instances asking at once take turns, and the second sees
        the first one's row.
        """
        ttl_ms = int(ttl.total_seconds() * 1000)
        if not name or ttl_ms <= 0:
            raise InvalidInput("a lease needs a name and a positive duration", reason="lease_invalid")
        with self._ctx.store.transaction() as tx:
            tx.lock("lease", name)
            now_ms = tx.store_now_ms()
            current = tx.get_lease(name)
            if current is not None and current.holder != self.instance_id and current.expires_ms > now_ms:
                return None
            taken_from = None
            acquired_ms = now_ms
            if current is not None and current.holder == self.instance_id:
                acquired_ms = current.acquired_ms  # a renewal keeps when it was first taken
            elif current is not None:
                taken_from = current.holder
                audit.append(tx, actor=actor, action="lease.takeover", subject=name,
                             details={"holder": self.instance_id, "previous_holder": current.holder,
                                      "expired_ms_ago": now_ms - current.expires_ms},
                             at=self._ctx.clock())
            tx.put_lease(LeaseRow(name, self.instance_id, acquired_ms, now_ms + ttl_ms))
        return Lease(name=name, holder=self.instance_id, expires_in=ttl, taken_over_from=taken_from)

    def release(self, name: str) -> bool:
        """Give the lease up if this instance holds it (another instance may take it at once)."""
        with self._ctx.store.transaction() as tx:
            tx.lock("lease", name)
            return tx.delete_lease(name, self.instance_id)

    def holder(self, name: str) -> str | None:
        """The instance holding `name` now; None when nobody does (never taken, released or expired)."""
        with self._ctx.store.read() as tx:
            now_ms = tx.store_now_ms()
            current = tx.get_lease(name)
        return current.holder if current is not None and current.expires_ms > now_ms else None

    def held(self, prefix: str) -> dict[str, str]:
        """Lease name -> holder, for the unexpired leases whose names start with `prefix`."""
        with self._ctx.store.read() as tx:
            now_ms = tx.store_now_ms()
            return {row.name: row.holder for row in tx.list_leases(prefix) if row.expires_ms > now_ms}
