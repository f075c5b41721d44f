"""Leases (trustlists/leases.py) on both stores: one holder at a time, renewal, release, takeover after expiry."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import pytest

from trustlists.engine import Engine
from trustlists.errors import InvalidInput
from trustlists.leases import LEADER_MAINTENANCE
from trustlists.maintenance import MaintenanceReport, run_maintenance
from trustlists.testing import Clock, make_engine

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


async def test_only_the_elected_instance_re_signs_crls(engine: Engine, tmp_path: Path, store_url: str | None,
                                                       clock: Clock) -> None:
    policy = engine.config.group("mqtt-device")
    clock.now += timedelta(days=policy.crl_lifetime_days - policy.crl_refresh_margin_days + 1)  # CRLs are due
    follower = make_engine(tmp_path, store_url=store_url, clock=clock, instance_id="instance-b")
    assert engine.leases.acquire(LEADER_MAINTENANCE, ttl=timedelta(seconds=60), actor="tester")
    reports: list[MaintenanceReport] = []
    task = asyncio.create_task(run_maintenance(follower, interval_s=0.01, lease_s=3, on_report=reports.append))
    try:
        while len(reports) < 2:
            await asyncio.sleep(0.01)
        assert [(r.leader, r.crls_published) for r in reports[:2]] == [(False, []), (False, [])]
        assert engine.latest_crl("mqtt-device") is not None
        number = engine.latest_crl("mqtt-device").crl_number  # type: ignore[union-attr] # checked above
        engine.leases.release(LEADER_MAINTENANCE)  # the leader stops cleanly: the follower takes over at once
        while not any(r.leader for r in reports):
            await asyncio.sleep(0.01)
        first = next(r for r in reports if r.leader)
        assert f"mqtt-device#{number + 1}" in first.crls_published
        assert engine.leases.holder(LEADER_MAINTENANCE) == "instance-b"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert engine.leases.holder(LEADER_MAINTENANCE) is None  # released when the task stopped
    follower.close()
