"""The questions the fronts ask `Engine` instead of its context: CA state, revocation, CRLs, whether a key signs."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustlists.engine import Engine
from trustlists.errors import NotFound
from trustlists.models import Owner, RevocationReason
from trustlists.testing import make_engine


def test_ca_statuses_say_which_ca_its_issuer_revoked(engine: Engine, device: Owner) -> None:
    issuing = engine.hierarchy.issuing_ca_for("mqtt-device", None)
    assert {s.record.id: s.revoked for s in engine.ca_statuses()} == {ca.id: False for ca in engine.hierarchy.list()}
    serial = engine.authority.issue_with_new_key(owner_id=device.id, actor="t").record.serial
    assert not engine.is_revoked(issuing.id, int(serial, 16))

    engine.authority.revoke(issuing.serial, reason=RevocationReason.CA_COMPROMISE, actor="t")

    statuses = {s.record.id: s for s in engine.ca_statuses()}
    assert [ca_id for ca_id, s in statuses.items() if s.revoked] == [issuing.id]
    assert issuing.parent_id is not None
    assert engine.ca_status(issuing.id).revoked and not engine.ca_status(issuing.parent_id).revoked
    assert not statuses[issuing.id].live_at(engine.now())
    assert engine.is_revoked(issuing.parent_id, int(issuing.serial, 16))
    assert not engine.is_revoked(issuing.id, int(serial, 16))  # the leaf itself was not revoked
    with pytest.raises(NotFound):
        engine.ca_status("no-such-ca")


def test_latest_crl_follows_each_publication(engine: Engine, device: Owner) -> None:
    issuing = engine.hierarchy.issuing_ca_for("mqtt-device", None)
    first = engine.latest_crl(issuing.id)
    assert first is not None and first.ca_id == issuing.id
    serial = engine.authority.issue_with_new_key(owner_id=device.id, actor="t").record.serial
    engine.authority.revoke(serial, reason=RevocationReason.KEY_COMPROMISE, actor="t")
    latest = engine.latest_crl(issuing.id)
    assert latest is not None and latest.crl_number == first.crl_number + 1 and latest.entries == 1
    assert engine.latest_crl("no-such-ca") is None


def test_probe_ca_key_tells_a_key_that_signs_from_one_that_is_gone(engine: Engine, tmp_path: Path) -> None:
    issuing = engine.hierarchy.issuing_ca_for("opcua-application", None)
    assert engine.probe_ca_key(issuing.id).ok
    # The key file disappears (a restore without the keys directory); a new process finds out.
    (key_file,) = [p for p in (tmp_path / "keys").iterdir() if issuing.key_ref in p.name]
    key_file.unlink()
    fresh = make_engine(tmp_path, config=engine.config, clock=engine.now)
    try:
        probe = fresh.probe_ca_key(issuing.id)
        assert not probe.ok and probe.ca_id == issuing.id and probe.problem
        others = [s.record.id for s in fresh.ca_statuses() if s.record.id != issuing.id]
        assert all(fresh.probe_ca_key(ca_id).ok for ca_id in others)
    finally:
        fresh.close()
    with pytest.raises(NotFound):
        engine.probe_ca_key("no-such-ca")
