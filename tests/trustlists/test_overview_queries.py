"""The queries the console's overview and lists are drawn from: inventory pages, counts per group, site and state,
the expiry histogram and audit pages (the console shows these numbers and computes none of its own)."""

from __future__ import annotations

import pytest

from trustlists.engine import Engine
from trustlists.errors import InvalidInput
from trustlists.models import CertificateStatus, Owner, RevocationReason
from trustlists.testing import Clock, make_csr

STORE_BACKENDS = ("sqlite", "postgresql")


def test_pages_counts_and_expiry_agree_with_the_listing(engine: Engine, device: Owner, clock: Clock) -> None:
    serials = [engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="t").record.serial
               for _ in range(5)]
    engine.authority.revoke(serials[0], reason=RevocationReason.KEY_COMPROMISE, actor="t")
    everything = [x.serial for x in engine.inventory.listing()]
    first = engine.inventory.page(limit=2)
    second = engine.inventory.page(limit=2, offset=2)
    rest = engine.inventory.page(limit=10, offset=4)
    assert first.total == second.total == len(everything)
    assert [x.serial for x in first.lines + second.lines + rest.lines] == everything
    revoked = engine.inventory.page(status=CertificateStatus.REVOKED, group="mqtt-device")
    assert (revoked.total, [x.serial for x in revoked.lines]) == (1, [serials[0]])

    counts = {(c.group, c.status): c.certificates for c in engine.inventory.counts()}
    assert counts[("mqtt-device", "revoked")] == 1
    assert counts[("mqtt-device", "active")] == 4

    buckets = engine.inventory.expiry_by_month(12)
    assert len(buckets) == 12 and buckets[0].start == clock.now
    live_within_a_year = [x for x in engine.inventory.expiring(buckets[-1].end - clock.now)]
    assert sum(b.certificates for b in buckets) == len(live_within_a_year)


def test_the_total_of_a_page_is_counted_up_to_a_cap(engine: Engine, device: Owner,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import trustlists.inventory

    for _ in range(6):
        engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="t")
    assert (engine.inventory.page(limit=2).total, engine.inventory.page(limit=2).total_capped) == (6, False)
    monkeypatch.setattr(trustlists.inventory, "COUNT_CAP", 1)
    capped = engine.inventory.page(limit=2, offset=1)
    assert (capped.total, capped.total_capped, len(capped.lines)) == (4, True, 2)


def test_page_bounds_are_checked(engine: Engine) -> None:
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}):
        with pytest.raises(InvalidInput):
            engine.inventory.page(**bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        engine.audit_page(limit=0)


def test_audit_pages_go_back_from_the_newest(engine: Engine, device: Owner) -> None:
    every = [r.seq for r in engine.audit_records()]
    newest = engine.audit_page(limit=3)
    assert [r.seq for r in newest] == every[::-1][:3]
    older = engine.audit_page(before_seq=newest[-1].seq, limit=1000)
    assert [r.seq for r in newest + older] == every[::-1]
    assert newest[0].hash == engine.audit_records()[-1].hash


def test_audit_records_of_one_subject(engine: Engine, device: Owner) -> None:
    serial = engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="t").record.serial
    engine.authority.revoke(serial, reason=RevocationReason.SUPERSEDED, actor="t")
    mine = engine.audit_records(subject=serial)
    assert [r.seq for r in mine] == [r.seq for r in engine.audit_records() if r.subject == serial]
    assert [r.action for r in mine] == ["certificate.issue", "certificate.revoke"]
