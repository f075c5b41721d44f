"""Registry.unregister: the registration ends, the owner and its history stay.

The end of a registration is the typed `Owner.unregistered_at`, kept in the store where it always was
(`attributes["unregistered_at"]`, ISO 8601), so existing data directories load; only the engine sets or clears it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from trustlists.engine import Engine
from trustlists.errors import InvalidInput, InvalidState, NotFound
from trustlists.models import Owner
from trustlists.testing import Clock, store_snapshot


def _stored_attributes(engine: Engine, owner_id: str) -> dict[str, object]:
    with engine._ctx.store.read() as tx:
        return json.loads(tx.execute("SELECT attributes FROM owners WHERE id = ?", (owner_id,)).fetchone()[0])


def test_unregister_marks_the_owner_and_audits(engine: Engine, scada: Owner, clock: Clock) -> None:
    assert not scada.unregistered and scada.unregistered_at is None
    done = engine.registry.unregister(scada.id, actor="ops")
    assert done.unregistered_at == clock.now and "unregistered_at" not in done.attributes
    stored = engine.registry.get(scada.id)  # still there: the inventory keeps pointing at it
    assert stored.unregistered_at == clock.now and stored.attributes == scada.attributes
    # The store keeps the shape it always had.
    assert _stored_attributes(engine, scada.id) == {**scada.attributes, "unregistered_at": clock.now.isoformat()}
    assert stored.application_uri == scada.application_uri and stored.dns_names == scada.dns_names
    (record,) = [r for r in engine.audit_records() if r.action == "owner.unregister"]
    assert (record.actor, record.subject) == ("ops", scada.id)
    assert record.details["application_uri"] == "urn:plant:scada-1"
    assert engine.verify_audit().ok


def test_unregister_twice_or_unknown_is_refused(engine: Engine, scada: Owner) -> None:
    engine.registry.unregister(scada.id, actor="ops")
    before = len(engine.audit_records())
    with pytest.raises(InvalidState):
        engine.registry.unregister(scada.id, actor="ops")
    with pytest.raises(NotFound):
        engine.registry.unregister("no-such-owner", actor="ops")
    assert len(engine.audit_records()) == before


def test_unregistered_owner_gets_no_certificates(engine: Engine, device: Owner) -> None:
    from trustlists.testing import make_csr, store_snapshot

    engine.registry.unregister(device.id, actor="t")
    before = store_snapshot(engine)
    with pytest.raises(NotFound, match="unregistered"):
        engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="t")
    with pytest.raises(NotFound, match="unregistered"):
        engine.requests.submit_csr(device.id, make_csr("pump-7"), actor="t")
    assert store_snapshot(engine) == before


def test_a_marker_written_before_the_typed_field_loads(engine: Engine, device: Owner) -> None:
    """A data directory from before: the marker inside the attributes JSON, next to the owner's own attributes."""
    with engine._ctx.store.transaction() as tx:
        tx.execute("UPDATE owners SET attributes = ? WHERE id = ?",
                   (json.dumps({"registered_by": "batch", "unregistered_at": "2024-03-01T12:00:00+00:00"}),
                    device.id))
    owner = engine.registry.get(device.id)
    assert owner.unregistered_at == datetime(2024, 3, 1, 12, tzinfo=UTC)
    assert owner.attributes == {"registered_by": "batch"}
    assert engine.registry.find("mqtt-device", name="pump-7") == owner
    # A marker that does not read as a time still ends the registration (fail closed), as any marker always did.
    with engine._ctx.store.transaction() as tx:
        tx.execute("UPDATE owners SET attributes = ? WHERE id = ?", (json.dumps({"unregistered_at": "soon"}),
                                                                     device.id))
    assert engine.registry.get(device.id).unregistered


def test_the_marker_is_not_an_input(engine: Engine, device: Owner) -> None:
    """Only unregister/decommission end a registration (audited as such); attributes cannot fake or lift it."""
    before = store_snapshot(engine)
    with pytest.raises(InvalidInput) as raised:
        engine.registry.register(group="mqtt-device", name="pump-8", actor="t",
                                 attributes={"unregistered_at": "2024-03-01T12:00:00+00:00"})
    assert raised.value.reason == "reserved_attribute"
    with pytest.raises(InvalidInput):
        engine.registry.update(device.model_copy(update={"attributes": {"unregistered_at": "2024-03-01"}}),
                               actor="t")
    with pytest.raises(InvalidInput):
        engine.registry.update(device.model_copy(update={"unregistered_at": datetime(2024, 3, 1, tzinfo=UTC)}),
                               actor="t")
    assert store_snapshot(engine) == before
    gone = engine.registry.unregister(device.id, actor="t")
    with pytest.raises(InvalidInput):  # an update does not restart a registration either
        engine.registry.update(gone.model_copy(update={"unregistered_at": None}), actor="t")
    assert engine.registry.get(device.id).unregistered


def test_reregister_starts_an_ended_registration_again(engine: Engine, device: Owner) -> None:
    with pytest.raises(InvalidState):
        engine.registry.reregister(device, actor="t")
    gone = engine.registry.unregister(device.id, actor="t")
    back = engine.registry.reregister(gone.model_copy(update={"site": "north"}), actor="ops")
    assert not back.unregistered and back.site == "north" and back.id == device.id
    assert not engine.registry.get(device.id).unregistered
    assert "unregistered_at" not in _stored_attributes(engine, device.id)
    (record,) = [r for r in engine.audit_records() if r.action == "owner.reregister"]
    assert (record.actor, record.subject) == ("ops", device.id)
