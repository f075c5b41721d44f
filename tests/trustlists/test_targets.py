"""Delivery targets: what needs a push, retry with backoff, and idempotence across restarts."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from trustlists.engine import Engine
from trustlists.errors import AlreadyExists, InvalidInput, InvalidState, NotFound
from trustlists.models import Owner, RevocationReason
from trustlists.targets import PinSource, TargetState, backoff
from trustlists.testing import make_csr, make_engine

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


FACTORY = "ab" * 32
RESET = "cd" * 32


def test_pins_identify_a_target_until_it_holds_an_engine_certificate(engine: Engine, scada: Owner,
                                                                      clock) -> None:  # type: ignore[no-untyped-def]
    # A fingerprint as a device displays it is accepted; anything else is refused before a target exists.
    with pytest.raises(InvalidInput) as err:
        engine.targets.add(owner_id=scada.id, kind=KIND, address="opc.tcp://plc-9:4840", credentials_ref="x",
                           actor="t", pin_sha256="ab:cd")
    assert err.value.reason == "fingerprint_invalid" and engine.targets.list() == []
    pinned = engine.targets.add(owner_id=scada.id, kind=KIND, address="opc.tcp://plc-9:4840", credentials_ref="x",
                                actor="t", pin_sha256=":".join(["AB"] * 32))
    assert pinned.pin is not None and pinned.pin.source is PinSource.REGISTERED
    assert engine.targets.get(pinned.id).pin == pinned.pin and pinned.pin.fingerprint_sha256 == FACTORY
    assert engine.audit_records(action="target.add")[-1].details["pinned_sha256"] == FACTORY
    # A registered pin is never replaced by a first contact.
    assert engine.targets.pin_first_contact(pinned.id, RESET, actor="push") == pinned.pin

    # Trust on first use: the first fingerprint is pinned (audited); a later one gets the pin back to compare.
    target = engine.targets.add(owner_id=scada.id, kind=KIND, address="opc.tcp://plc-1:4840", credentials_ref="x",
                                actor="t")
    assert target.pin is None
    first = engine.targets.pin_first_contact(target.id, FACTORY, actor="push")
    assert first.source is PinSource.FIRST_CONTACT and first.fingerprint_sha256 == FACTORY
    assert engine.targets.pin_first_contact(target.id, RESET, actor="push") == first
    assert [r.details["sha256"] for r in engine.audit_records(action="target.pin")] == [FACTORY]

    # The first delivered engine certificate releases the pin; a first contact no longer applies.
    serial = _deliver(engine, scada, target.id)
    assert engine.targets.get(target.id).pin is None
    assert engine.audit_records(action="target.delivered")[-1].details["pin_released"] == FACTORY
    with pytest.raises(InvalidState) as state:
        engine.targets.pin_first_contact(target.id, RESET, actor="push")
    assert state.value.reason == "pin_not_applicable" and engine.targets.get(target.id).pin is None

    # A device reset after delivery, refused and backing off: the operator's pin makes it due at once, for a
    # certificate (a trust list alone would leave the device without one).
    engine.targets.record_failure(target.id, error="server_identity: BadCertificateUntrusted", actor="push")
    assert target.id not in {t.id for t, _r in engine.targets.needing_delivery(kind=KIND)}  # backing off
    repinned = engine.targets.repin(target.id, RESET, actor="operator")
    assert repinned.source is PinSource.OPERATOR
    due = {t.id: r for t, r in engine.targets.needing_delivery(kind=KIND)}
    assert due[target.id] == "re-pinned: the device needs a certificate"
    assert engine.targets.needs_certificate(due[target.id])
    # A success that re-records the certificate the target already had does not release the operator's pin...
    engine.targets.record_success(target.id, serial=serial, trust_version=engine.trustlists.get(
        "opcua-application").version, actor="push")
    assert engine.targets.get(target.id).pin == repinned
    # ...a new engine certificate does.
    _deliver(engine, scada, target.id)
    assert engine.targets.get(target.id).pin is None
    assert [r.details["previous_sha256"] for r in engine.audit_records(action="target.repin")] == [None]
    assert engine.verify_audit().ok


def test_a_trust_list_the_target_did_not_apply_keeps_it_due(engine: Engine, scada: Owner,
                                                             clock) -> None:  # type: ignore[no-untyped-def]
    target = engine.targets.add(owner_id=scada.id, kind=KIND, address="opc.tcp://plc-3:4840", credentials_ref="x",
                                actor="t")
    old = _deliver(engine, scada, target.id)
    applied = engine.targets.get(target.id).delivered_trust_version
    version = engine.trustlists.get("opcua-application").version
    assert applied == version

    # A renewal push: the certificate went in, the trust list (the current version) reads back different.
    new = engine.authority.issue_from_csr(make_csr("scada-1", uris=["urn:plant:scada-1"]), owner_id=scada.id,
                                          actor="t", delivered=False).record.serial
    kept = engine.targets.record_trust_list_not_applied(target.id, serial=new, trust_version=version,
                                                        detail="reads back 0 trusted certificates", actor="push")
    assert kept.state is TargetState.NOT_APPLIED and kept.attempts == 1
    assert kept.delivered_serial == new and engine.inventory.get(new).delivered  # the certificate counts
    assert engine.inventory.get(old).superseded_by == new
    assert kept.delivered_trust_version == applied  # what it applied last, not what it dropped
    assert kept.last_error == (f"trust list v{version} written but not applied: reads back 0 trusted certificates")
    record = engine.audit_records(action="target.trust_list_not_applied")[-1]
    assert record.subject == target.id and record.details["trust_version"] == version

    # Due again, for the trust list only, after the backoff of a failure.
    plan = engine.targets.plan(kind=KIND)
    assert [(t.id, r) for t, r in plan.waiting] == [(target.id, f"trust list v{version} not applied by the target")]
    assert plan.due == [] and plan.current == []
    clock.now += backoff(1) + timedelta(seconds=1)
    [(due, reason)] = engine.targets.needing_delivery(kind=KIND)
    assert due.id == target.id and not engine.targets.needs_certificate(reason)

    # Applied at last: delivered and up to date.
    engine.targets.record_success(target.id, serial=new, trust_version=version, actor="push")
    assert engine.targets.get(target.id).state is TargetState.DELIVERED
    assert engine.targets.needing_delivery(kind=KIND) == []
    assert engine.verify_audit().ok


def test_a_plan_sorts_the_selection_into_due_waiting_and_current(engine: Engine, scada: Owner) -> None:
    def add(n: int) -> str:
        return engine.targets.add(owner_id=scada.id, kind=KIND, address=f"opc.tcp://plc-{n}:4840", credentials_ref="x",
                                  actor="t").id

    new, failing, done = add(1), add(2), add(3)
    engine.targets.record_failure(failing, error="connect: BadUserAccessDenied", actor="push")
    _deliver(engine, scada, done)

    plan = engine.targets.plan(kind=KIND)
    assert [(t.id, r) for t, r in plan.due] == [(new, "no certificate delivered yet")]
    assert [(t.id, r) for t, r in plan.waiting] == [(failing, "no certificate delivered yet")]
    assert [t.id for t in plan.current] == [done]
    # Narrowed to named targets; forced, every one of them is due.
    named = engine.targets.plan(kind=KIND, target_ids=[failing, done])
    assert [t.id for t, _r in named.waiting] == [failing] and [t.id for t in named.current] == [done]
    forced = engine.targets.plan(kind=KIND, target_ids=[failing, done], force=True)
    assert [(t.id, r) for t, r in forced.due] == [(failing, "no certificate delivered yet"), (done, "forced")]
    with pytest.raises(NotFound):
        engine.targets.plan(kind=KIND, target_ids=["nope"])
