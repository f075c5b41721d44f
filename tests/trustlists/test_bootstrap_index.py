"""The bootstrap allow-list index (migration 0004): who lists a bootstrap certificate is one indexed store lookup,
kept right by every owner write and filled for the registrations of a store upgraded from schema version 3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trustlists.engine import Engine
from trustlists.errors import BootstrapRefused
from trustlists.store import open_store
from trustlists.store.migrations import migrations
from trustlists.store.sqlite import SqliteStore
from trustlists.testing import make_engine

LATEST = migrations("sqlite")[-1].version  # the schema this otpki makes (both backends number alike)

STORE_BACKENDS = ("sqlite", "postgresql")
GROUP = "mqtt-device"
FP_A = "ab" * 32
FP_B = "cd" * 32


def _register(engine: Engine, name: str, entries: list[dict[str, str]], group: str = GROUP) -> str:
    return engine.registry.register(group=group, name=name, actor="tester", attributes={"bootstrap": entries}).id


def _candidates(engine: Engine, *, fingerprint: str, subject_cn: str | None, group: str = GROUP) -> list[str]:
    with engine._ctx.store.read() as tx:
        return [o.name for o in tx.owners_by_bootstrap(group, fingerprint=fingerprint, subject_cn=subject_cn)]


def test_the_index_names_only_the_owners_that_list_the_certificate(engine: Engine) -> None:
    _register(engine, "hmi-1", [{"subject_cn": "SN-1"}])
    _register(engine, "hmi-2", [{"sha256": FP_A.upper()}, {"subject_cn": "SN-2"}])  # stored normalized
    _register(engine, "hmi-3", [])
    engine.registry.register(group=GROUP, name="plain", actor="tester")
    assert _candidates(engine, fingerprint=FP_B, subject_cn="SN-1") == ["hmi-1"]
    assert _candidates(engine, fingerprint=FP_A, subject_cn=None) == ["hmi-2"]
    assert _candidates(engine, fingerprint=FP_A, subject_cn="SN-1") == ["hmi-1", "hmi-2"]
    assert _candidates(engine, fingerprint=FP_B, subject_cn="SN-9") == []
    assert engine.bootstrap.find_owner(GROUP, subject_cn="SN-2", fingerprint=FP_B).name == "hmi-2"
    assert engine.bootstrap.find_owner(GROUP, subject_cn=None, fingerprint=FP_A.upper()).name == "hmi-2"
    with pytest.raises(BootstrapRefused):  # a self-signed certificate's CN counts for nothing
        engine.bootstrap.find_owner(GROUP, subject_cn="SN-1", fingerprint=FP_B, fingerprint_only=True)


def test_the_index_follows_rearm_and_stays_within_its_group(engine: Engine) -> None:
    hmi = _register(engine, "hmi-1", [{"subject_cn": "SN-1"}])
    _register(engine, "other", [{"subject_cn": "SN-2"}], group="opcua-user")
    engine.bootstrap.rearm(hmi, actor="tester", allow=[{"subject_cn": "SN-2"}, {"sha256": FP_A}])
    with pytest.raises(BootstrapRefused):
        engine.bootstrap.find_owner(GROUP, subject_cn="SN-1", fingerprint=FP_B)
    assert engine.bootstrap.find_owner(GROUP, subject_cn="SN-2", fingerprint=FP_B).id == hmi
    assert engine.bootstrap.find_owner(GROUP, subject_cn=None, fingerprint=FP_A).id == hmi
    assert _candidates(engine, fingerprint=FP_B, subject_cn="SN-2", group="opcua-user") == ["other"]
    engine.registry.unregister(hmi, actor="tester")
    with pytest.raises(BootstrapRefused):  # still indexed, but an ended registration admits nobody
        engine.bootstrap.find_owner(GROUP, subject_cn="SN-2", fingerprint=FP_B)


def test_an_upgrade_from_version_3_indexes_the_registrations_it_finds(tmp_path: Path, engine: Engine,
                                                                      store_url: str | None) -> None:
    hmi = _register(engine, "hmi-1", [{"subject_cn": "SN-1"}, {"sha256": FP_A}])
    _register(engine, "hmi-2", [{"subject_cn": "SN-2"}])
    engine.registry.register(group=GROUP, name="odd", actor="tester")
    engine.close()
    store = SqliteStore(tmp_path / "otpki.db", check_schema=False) if store_url is None else open_store(
        store_url, check_schema=False)
    try:
        with store.transaction() as tx:  # the schema as version 3 left it: no index
            tx.execute("DROP TABLE bootstrap_allowlist")
            tx.execute("DROP TABLE certificate_tallies")  # migration 5 fills it from the certificates again
            tx.execute("DELETE FROM schema_migrations WHERE version >= 4")
            # Written before allow-lists were validated: a fingerprint as people copy it, and entries that are none.
            colons = ":".join(FP_B[i:i + 2] for i in range(0, 64, 2)).upper()
            tx.execute("UPDATE owners SET attributes = ? WHERE name = ?",
                       (json.dumps({"bootstrap": [{"subject_cn": 7}, "SN-3", {"sha256": colons}]}), "odd"))
        assert [m.version for m in store.upgrade()] == list(range(4, LATEST + 1))
    finally:
        store.close()
    upgraded = make_engine(tmp_path, store_url=store_url)
    try:
        assert upgraded.bootstrap.find_owner(GROUP, subject_cn=None, fingerprint=FP_A).id == hmi
        assert upgraded.bootstrap.find_owner(GROUP, subject_cn="SN-2", fingerprint="00" * 32).name == "hmi-2"
        assert _candidates(upgraded, fingerprint=FP_B, subject_cn="SN-1") == ["hmi-1", "odd"]
        assert upgraded.bootstrap.find_owner(GROUP, subject_cn="SN-1", fingerprint=FP_B,
                                             fingerprint_only=True).name == "odd"
        assert _candidates(upgraded, fingerprint="00" * 32, subject_cn="SN-3") == []
    finally:
        upgraded.close()
