"""Leases (trustlists/leases.py) on both stores: one holder at a time, renewal, release, takeover after expiry."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from trustlists.engine import Engine
from trustlists.errors import InvalidInput
from trustlists.testing import make_engine

STORE_BACKENDS = ("sqlite", "postgresql")


def _other(tmp_path: Path, store_url: str | None, name: str) -> Engine:
    return make_engine(tmp_path, store_url=store_url, instance_id=name)


def test_one_holder_at_a_time_renewal_and_release(engine: Engine, tmp_path: Path, store_url: str | None) -> None:
    other = _other(tmp_path, store_url, "instance-b")
    try:
        first = engine.leases.acquire("push-target:t1", ttl=timedelta(seconds=60), actor="tester")
        assert first is not None and first.holder == engine.instance_id and first.taken_over_from is None
        assert other.leases.acquire("push-target:t1", ttl=timedelta(seconds=60), actor="tester") is None
        assert engine.leases.acquire("push-target:t1", ttl=timedelta(seconds=60), actor="tester") is not None
        assert other.leases.holder("push-target:t1") == engine.instance_id
        assert other.leases.held("push-target:") == {"push-target:t1": engine.instance_id}
        assert not other.leases.release("push-target:t1")  # not its lease
        assert engine.leases.release("push-target:t1")
        assert other.leases.holder("push-target:t1") is None
        taken = other.leases.acquire("push-target:t1", ttl=timedelta(seconds=60), actor="tester")
        assert taken is not None and taken.taken_over_from is None  # released, not taken over
        assert engine.audit_records(action="lease.takeover") == []
    finally:
        other.close()


def test_an_expired_lease_is_taken_over_and_audited(engine: Engine, tmp_path: Path, store_url: str | None) -> None:
    other = _other(tmp_path, store_url, "instance-b")
    try:
        assert engine.leases.acquire("leader:maintenance", ttl=timedelta(milliseconds=200), actor="tester")
        deadline = time.monotonic() + 10
        taken = None
        while taken is None and time.monotonic() < deadline:
            taken = other.leases.acquire("leader:maintenance", ttl=timedelta(seconds=60), actor="tester")
            time.sleep(0.05)
        assert taken is not None and taken.taken_over_from == engine.instance_id
        assert engine.leases.acquire("leader:maintenance", ttl=timedelta(seconds=60), actor="tester") is None
        records = engine.audit_records(action="lease.takeover")
        assert [(r.subject, r.details["holder"], r.details["previous_holder"]) for r in records] == [
            ("leader:maintenance", "instance-b", engine.instance_id)]
        assert engine.verify_audit().ok
    finally:
        other.close()


def test_a_lease_needs_a_name_and_a_duration(engine: Engine) -> None:
    with pytest.raises(InvalidInput):
        engine.leases.acquire("", ttl=timedelta(seconds=1), actor="tester")
    with pytest.raises(InvalidInput):
        engine.leases.acquire("x", ttl=timedelta(0), actor="tester")
