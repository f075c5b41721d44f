"""The store under contention, and inventory queries."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from trustlists.engine import Engine
from trustlists.errors import AlreadyExists, StoreBusy
from trustlists.models import CertificateStatus, Owner, RevocationReason
from trustlists.testing import make_csr, make_engine, store_snapshot

# Every test here runs on SQLite and on PostgreSQL (tests/trustlists/conftest.py).
STORE_BACKENDS = ("sqlite", "postgresql")


@contextlib.contextmanager
def blocking_writers(tmp_path: Path, store_url: str | None) -> Iterator[None]:
    """Another client holds a lock that keeps every writer out (reads go on) until the block ends."""
    if store_url is None:
        blocker = sqlite3.connect(tmp_path / "otpki.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        return
    with psycopg.connect(store_url) as pg:
        pg.execute("LOCK TABLE certificates IN EXCLUSIVE MODE")
        try:
            yield
        finally:
            pg.rollback()


def test_locked_database_gives_store_busy_and_changes_nothing(engine: Engine, device: Owner, tmp_path: Path,
                                                              store_url: str | None) -> None:
    engine.close()
    eng = make_engine(tmp_path, config=engine.config, busy_timeout_s=0.2, store_url=store_url)
    before = store_snapshot(eng)
    with blocking_writers(tmp_path, store_url), pytest.raises(StoreBusy, match="locked"):
        eng.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="t")
    assert store_snapshot(eng) == before
    eng.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="t")  # works once released
    eng.close()


def test_inventory_statuses_and_expiry_window(engine: Engine, device: Owner, clock) -> None:  # type: ignore[no-untyped-def]
    a = engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="t").record.serial
    b = engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="t").record.serial
    c = engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="t",
                                        delivered=False).record.serial
    engine.authority.revoke(b, reason=RevocationReason.KEY_COMPROMISE, actor="t")
    status = {r.serial: r.status_at(clock.now) for r in engine.inventory.query(group="mqtt-device")}
    assert status == {a: CertificateStatus.ACTIVE, b: CertificateStatus.REVOKED,
                      c: CertificateStatus.NOT_DELIVERED}
    assert [r.serial for r in engine.inventory.query(status=CertificateStatus.NOT_DELIVERED)] == [c]
    assert engine.authority.mark_delivered(c, actor="t")
    assert engine.inventory.query(status=CertificateStatus.NOT_DELIVERED) == []

    assert engine.inventory.expiring(timedelta(days=30)) == []
    clock.now += timedelta(days=365 - 20)  # mqtt-device leaves live 365 days
    expiring = {r.serial for r in engine.inventory.expiring(timedelta(days=30))}
    assert expiring == {a, c}  # the revoked one is not news
    clock.now += timedelta(days=30)
    assert {r.serial for r in engine.inventory.query(status=CertificateStatus.EXPIRED)} == {a, c}
    assert [r.serial for r in engine.inventory.query(owner_id=device.id, status=CertificateStatus.REVOKED)] == [b]


def test_owners_registered_and_found_in_bulk(engine: Engine) -> None:
    """A factory batch's chunk: one look-up for all its names, one insert, one statement of audit records; a
    taken name refuses the whole list (the caller's transaction rolls back) and stores none of it."""
    owners = [engine.registry.new_owner(group="mqtt-device", name=f"bulk-{i}") for i in range(3)]
    with engine._ctx.store.transaction() as tx:
        engine.registry.register_many(tx, owners, actor="line")
    with engine._ctx.store.read() as tx:
        found = tx.find_owners("mqtt-device", ["bulk-0", "bulk-2", "nobody"])
    assert {name: o.id for name, o in found.items()} == {"bulk-0": owners[0].id, "bulk-2": owners[2].id}
    registered = [r for r in engine.audit_records() if r.action == "owner.register"]
    assert [r.subject for r in registered[-3:]] == [o.id for o in owners]
    again = [engine.registry.new_owner(group="mqtt-device", name="bulk-new"),
             engine.registry.new_owner(group="mqtt-device", name="bulk-1")]
    with pytest.raises(AlreadyExists), engine._ctx.store.transaction() as tx:
        engine.registry.register_many(tx, again, actor="line")
    assert engine.registry.find("mqtt-device", name="bulk-new") is None
    assert engine.verify_audit().ok
