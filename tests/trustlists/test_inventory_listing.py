"""The inventory as `otpki certs list` shows it: `Inventory.listing` gives the certificates `query` gives, in its
order, as light lines whose status is the one each record reports."""

from __future__ import annotations

from datetime import timedelta

from trustlists.engine import Engine
from trustlists.models import CertificateStatus, Owner, RevocationReason
from trustlists.testing import Clock, make_csr


def lines_match_records(engine: Engine, clock: Clock, **filters: object) -> list[str]:
    records = engine.inventory.query(**filters)  # type: ignore[arg-type]
    lines = engine.inventory.listing(**filters)  # type: ignore[arg-type]
    assert [(x.serial, x.subject, x.group, x.site, x.owner_id, x.not_after, x.status, x.issuance) for x in lines] == [
        (r.serial, r.subject, r.group, r.site, r.owner_id, r.not_after, r.status_at(clock.now), r.issuance)
        for r in records], filters
    return [x.serial for x in lines]


def test_listing_is_the_query_with_each_certificate_s_status(engine: Engine, device: Owner, scada: Owner,
                                                              clock: Clock) -> None:
    def issue(**kwargs: object) -> str:
        return engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="t",
                                               **kwargs).record.serial  # type: ignore[arg-type]

    active = issue()
    renewed = issue()
    renewal = engine.authority.renew(renewed, actor="t").record.serial
    revoked = issue()
    engine.authority.revoke(revoked, reason=RevocationReason.KEY_COMPROMISE, actor="t")
    undelivered = issue(delivered=False)
    app = engine.authority.issue_from_csr(make_csr("scada-1", uris=["urn:plant:scada-1"], dns=["scada-1.plant"]),
                                          owner_id=scada.id, actor="t").record.serial

    listed = {x.serial: x.status for x in engine.inventory.listing()}
    assert listed == {active: CertificateStatus.ACTIVE, renewed: CertificateStatus.SUPERSEDED,
                      renewal: CertificateStatus.ACTIVE, revoked: CertificateStatus.REVOKED,
                      undelivered: CertificateStatus.NOT_DELIVERED, app: CertificateStatus.ACTIVE}
    for filters in ({}, {"group": "mqtt-device"}, {"owner_id": scada.id}, {"limit": 2},
                    {"expiring_within": timedelta(days=400)}, *({"status": s} for s in CertificateStatus)):
        lines_match_records(engine, clock, **filters)
    assert lines_match_records(engine, clock, status=CertificateStatus.SUPERSEDED) == [renewed]

    clock.now += timedelta(days=366)  # past the mqtt-device lifetime, within the application's
    listed = {x.serial: x.status for x in engine.inventory.listing()}
    assert listed[active] is listed[renewal] is listed[undelivered] is CertificateStatus.EXPIRED
    assert listed[revoked] is CertificateStatus.REVOKED and listed[app] is CertificateStatus.ACTIVE
    lines_match_records(engine, clock)
    assert set(lines_match_records(engine, clock, status=CertificateStatus.EXPIRED)) == {
        active, renewed, renewal, undelivered}
