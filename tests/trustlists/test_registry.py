"""Registry.unregister: the registration ends, the owner and its history stay."""

from __future__ import annotations

import pytest

from trustlists.engine import Engine
from trustlists.errors import InvalidState, NotFound
from trustlists.models import Owner
from trustlists.registry import UNREGISTERED_AT, is_unregistered


def test_unregister_marks_the_owner_and_audits(engine: Engine, scada: Owner) -> None:
    assert not is_unregistered(scada)
    done = engine.registry.unregister(scada.id, actor="ops")
    assert is_unregistered(done) and UNREGISTERED_AT in done.attributes
    stored = engine.registry.get(scada.id)  # still there: the inventory keeps pointing at it
    assert is_unregistered(stored)
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
