"""A page of a group's owners with each one's newest certificate and last-seen time (the Devices page's one query),
on both backends: the same as reading every owner and every certificate, page after page."""

from __future__ import annotations

from datetime import timedelta

import pytest

from trustlists.engine import Engine
from trustlists.errors import InvalidInput, NotFound
from trustlists.models import RevocationReason
from trustlists.testing import Clock, make_csr

STORE_BACKENDS = ("sqlite", "postgresql")


def test_pages_of_owners_with_their_newest_certificate(engine: Engine, clock: Clock) -> None:
    names = [f"dev-{i:02d}" for i in range(7)]
    owners = {n: engine.registry.register(group="mqtt-device", name=n, actor="t") for n in reversed(names)}
    engine.registry.register(group="opcua-user", name="operator-1", actor="t")  # another group: not listed
    for i, name in enumerate(names[:5]):
        for _ in range(i % 3 + 1):  # 1 to 3 certificates each, each later one ending later
            clock.now += timedelta(hours=1)
            # dev-03's newest is not delivered yet: its state is shown as such
            engine.authority.issue_from_csr(make_csr(name), owner_id=owners[name].id, actor="t",
                                            delivered=name != "dev-03")
    newest = {}
    for name in names[:5]:
        mine = engine.inventory.query(owner_id=owners[name].id)
        newest[name] = max(mine, key=lambda r: r.not_after).serial
    engine.authority.revoke(newest["dev-01"], reason=RevocationReason.KEY_COMPROMISE, actor="t")
    seen_at = clock.now.replace(microsecond=0)
    engine.registry.record_last_seen("mqtt-device", {"dev-02": seen_at, "dev-06": seen_at})
    engine.registry.record_last_seen("mqtt-device", {"dev-02": seen_at - timedelta(hours=1)})  # older: kept out

    lines = []
    for offset in range(0, 9, 3):
        page = engine.registry.page("mqtt-device", offset=offset, limit=3)
        assert page.total == 7
        lines += page.lines
    assert [line.owner.name for line in lines] == names
    assert {line.owner.name: line.newest.serial if line.newest else None for line in lines} == {
        **newest, "dev-05": None, "dev-06": None}
    by_name = {line.owner.name: line for line in lines}
    assert by_name["dev-01"].newest is not None and by_name["dev-01"].newest.status.value == "revoked"
    assert by_name["dev-00"].newest is not None and by_name["dev-00"].newest.status.value == "active"
    assert by_name["dev-03"].newest is not None and by_name["dev-03"].newest.status.value == "issued-not-delivered"
    assert {n: line.last_seen for n, line in by_name.items() if line.last_seen} == {"dev-02": seen_at,
                                                                                  "dev-06": seen_at}
    assert engine.registry.last_seen("mqtt-device", names) == {"dev-02": seen_at, "dev-06": seen_at}


def test_bad_pages_and_groups_are_refused(engine: Engine) -> None:
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}):
        with pytest.raises(InvalidInput):
            engine.registry.page("mqtt-device", **bad)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        engine.registry.page("no-such-group")
