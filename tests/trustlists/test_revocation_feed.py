"""Revocations announced at commit (Engine.on_revocations): LISTEN/NOTIFY on PostgreSQL, nothing on SQLite."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg

from trustlists.engine import Engine
from trustlists.models import Owner, RevocationReason
from trustlists.testing import make_csr, make_engine

STORE_BACKENDS = ("sqlite", "postgresql")
DEADLINE_S = 30.0


class Calls:
    def __init__(self) -> None:
        self.count = 0
        self._cond = threading.Condition()

    def __call__(self) -> None:
        with self._cond:
            self.count += 1
            self._cond.notify_all()

    def wait_beyond(self, n: int) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.count > n, timeout=DEADLINE_S)


def test_another_instances_revocation_is_announced_and_a_lost_connection_caught_up(
        engine: Engine, device: Owner, tmp_path: Path, store_url: str | None, store_backend: str) -> None:
    other = make_engine(tmp_path, store_url=store_url, instance_id="instance-b")
    calls = Calls()
    subscription = engine.on_revocations(calls)
    try:
        if store_backend == "sqlite":
            assert subscription is None  # SQLite keeps polling
            return
        assert subscription is not None
        serial = other.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="t").record.serial
        before = calls.count
        other.authority.revoke(serial, reason=RevocationReason.KEY_COMPROMISE, actor="t")
        assert calls.wait_beyond(before)
        assert engine.refresh_revocations() == 1 and engine.is_revoked("mqtt-device", int(serial, 16))
        # The listening connection dies (a failover, a restart of the server): the subscriber is called again
        # once it is back, to catch up with what it may have missed meanwhile.
        assert store_url is not None
        with psycopg.connect(store_url, autocommit=True) as admin:
            killed = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()").fetchall()
        assert killed == [(True,)]
        before = calls.count
        assert calls.wait_beyond(before)
    finally:
        if subscription is not None:
            subscription.close()
        other.close()
