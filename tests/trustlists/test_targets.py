"""Delivery targets: what needs a push, retry with backoff, and idempotence across restarts."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tests.helpers import make_csr, make_engine
from trustlists.engine import Engine
from trustlists.errors import AlreadyExists, NotFound
from trustlists.models import Owner, RevocationReason
from trustlists.targets import TargetState, backoff

KIND = "opcua-push"


def _deliver(engine: Engine, scada: Owner, target_id: str) -> str:
    serial = engine.authority.issue_from_csr(make_csr("scada-1", uris=["urn:plant:scada-1"]), owner_id=scada.id,
                                             actor="t", delivered=False).record.serial
    version = engine.trustlists.get("opcua-application").version
    engine.targets.record_success(target_id, serial=serial, trust_version=version, actor="rollout")
    return serial


def test_lifecycle_of_a_target(engine: Engine, scada: Owner, clock, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    target = engine.targets.add(owner_id=scada.id, kind=KIND, address="opc.tcp://plc-1:4840",
                                credentials_ref="plc-admin", actor="t")
    with pytest.raises(AlreadyExists):
        engine.targets.add(owner_id=scada.id, kind=KIND, address="opc.tcp://plc-1:4840", credentials_ref="x", actor="t")
    assert [(t.id, r) for t, r in engine.targets.needing_delivery(kind=KIND)] == [
        (target.id, "no certificate delivered yet")]

    # A failure backs off; the target is not due again until the backoff passed.
    failed = engine.targets.record_failure(target.id, error="connection refused", actor="rollout")
    assert failed.state is TargetState.RETRYING and failed.attempts == 1
    assert engine.targets.needing_delivery(kind=KIND) == []
    clock.now += backoff(1) + timedelta(seconds=1)
    assert len(engine.targets.needing_delivery(kind=KIND)) == 1

    serial = _deliver(engine, scada, target.id)
    delivered = engine.targets.get(target.id)
    assert delivered.state is TargetState.DELIVERED and delivered.attempts == 0
    assert engine.inventory.get(serial).delivered  # seen in the field
    assert engine.targets.needing_delivery(kind=KIND) == []  # idempotent: nothing to do

    # The state is in the store: another process (a restarted otpki) sees the same.
    other = make_engine(tmp_path, config=engine.config)
    assert other.targets.needing_delivery(kind=KIND) == []
    other.close()

    # A trust-list change (revoking another certificate of the group) makes the target due again.
    other_cert = engine.authority.issue_from_csr(make_csr("scada-1", uris=["urn:plant:scada-1"]), owner_id=scada.id,
                                                 actor="t").record.serial
    engine.authority.revoke(other_cert, reason=RevocationReason.KEY_COMPROMISE, actor="t")
    assert [r for _t, r in engine.targets.needing_delivery(kind=KIND)] == [
        f"trust list v{engine.trustlists.get('opcua-application').version} not delivered"]

    # And so does the renewal window of the delivered certificate.
    _deliver(engine, scada, target.id)
    clock.now += timedelta(days=730 - 59)
    assert [r for _t, r in engine.targets.needing_delivery(kind=KIND)] == ["certificate inside its renewal window"]
    assert engine.verify_audit().ok


def test_backoff_grows_and_is_capped() -> None:
    assert [backoff(n).total_seconds() for n in (1, 2, 3)] == [30, 60, 120]
    assert backoff(50) == timedelta(hours=1)


def test_unknown_target(engine: Engine) -> None:
    with pytest.raises(NotFound):
        engine.targets.get("nope")
    with pytest.raises(NotFound):
        engine.targets.record_failure("nope", error="x", actor="t")
