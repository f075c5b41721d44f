"""Versioned migrations: a store of release 0.1.0 upgrades and keeps working; other schemas are refused.

The data directory in tests/fixtures/datadir_0_1_0 was written by release 0.1.0's own code (see
tests/fixtures/make_datadir_0_1_0.py), before stores recorded their migrations. The CLI claims run the real
`otpki` in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from trustlists.errors import SchemaMismatch, StoreError
from trustlists.models import RevocationReason
from trustlists.store import SqliteStore, migrations
from trustlists.store.migrations import Migration
from trustlists.testing import PASSPHRASE, initialized_engine, make_csr, make_engine

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "datadir_0_1_0"


def otpki(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OTPKI_DATA_DIR": str(data_dir), "OTPKI_CA_PASSPHRASE": PASSPHRASE.decode(),
           "OTPKI_ACTOR": "upgrader"}
    return subprocess.run([sys.executable, "-m", "otpki.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture
def old_data_dir(tmp_path: Path) -> Path:
    data_dir = tmp_path / "datadir"
    shutil.copytree(FIXTURE, data_dir)
    return data_dir


def schema_rows(db: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()


def test_a_data_directory_of_release_0_1_0_is_refused_until_upgraded_then_keeps_working(old_data_dir: Path) -> None:
    manifest = json.loads((old_data_dir / "manifest.json").read_text())
    with pytest.raises(SchemaMismatch) as refused:
        make_engine(old_data_dir)
    assert refused.value.reason == "schema_outdated" and "otpki db upgrade" in refused.value.message
    listed = otpki(old_data_dir, "certs", "list")
    assert listed.returncode == 2 and listed.stdout == ""
    assert listed.stderr.count("\n") == 1 and "run `otpki db upgrade`" in listed.stderr

    status = otpki(old_data_dir, "db", "status", "--json")
    assert status.returncode == 1
    shown = json.loads(status.stdout)
    assert (shown["backend"], shown["version"], shown["empty"], shown["current"]) == ("sqlite", 0, False, False)
    assert shown["pending"] == [f"{m.version:04d}_{m.name}" for m in migrations.migrations("sqlite")]

    upgraded = otpki(old_data_dir, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "applied 0001_initial" in upgraded.stdout
    assert otpki(old_data_dir, "db", "status").returncode == 0
    again = otpki(old_data_dir, "db", "upgrade", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["applied"] == []
    assert [v for v, _ in schema_rows(old_data_dir / "otpki.db")] == list(range(1, migrations.latest("sqlite") + 1))

    engine = make_engine(old_data_dir)
    try:
        verified = engine.verify_audit()
        assert verified.ok and verified.records == manifest["audit_records"] + 1  # + the upgrade's own record
        upgrade_record = engine.audit_records(action="store.upgrade")
        assert [(r.actor, r.details["from"]) for r in upgrade_record] == [("upgrader", 0)]
        assert engine.inventory.count() == manifest["certificates"]
        kept = engine.inventory.get(manifest["kept_serial"])
        assert kept.revoked_at is None and kept.der is not None
        assert engine.inventory.get(manifest["revoked_serial"]).revocation_reason is RevocationReason.KEY_COMPROMISE
        assert engine.requests.get(manifest["request"]).status.value == manifest["request_status"]
        target = engine.targets.get(manifest["target"])
        assert target.pin is not None and target.pin.fingerprint_sha256 == "ab" * 32
        assert engine.is_revoked(manifest["mqtt_issuing_ca"], int(manifest["revoked_serial"], 16))

        # Issuance and revocation go on where 0.1.0 left them: the CRL number and trust-list version continue.
        pump = engine.registry.find("mqtt-device", name="pump-7")
        assert pump is not None
        issued = engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=pump.id, actor="tester")
        engine.authority.revoke(issued.record.serial, reason=RevocationReason.SUPERSEDED, actor="tester")
        crl = engine.latest_crl(manifest["mqtt_issuing_ca"])
        assert crl is not None and crl.crl_number == manifest["last_crl_number"] + 1
        engine.authority.revoke(manifest["kept_serial"], reason=RevocationReason.SUPERSEDED, actor="tester")
        assert engine.trustlists.get("opcua-application").version == manifest["trust_version_opcua"] + 1
        assert engine.verify_audit().ok
    finally:
        engine.close()


def test_a_store_newer_than_this_otpki_is_refused_and_not_upgraded(tmp_path: Path) -> None:
    engine = initialized_engine(tmp_path / "pki", actor="tester")
    engine.close()
    db = tmp_path / "pki" / "otpki.db"
    future = migrations.latest("sqlite") + 1
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'from_the_future', 0)",
                     (future,))
    with pytest.raises(SchemaMismatch) as refused:
        SqliteStore(db)
    assert refused.value.reason == "schema_too_new" and "newer otpki" in refused.value.message
    for args in (("ca", "list"), ("db", "upgrade")):
        res = otpki(tmp_path / "pki", *args)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert res.stderr.count("\n") == 1 and f"schema version {future}, newer than this otpki" in res.stderr
    status = otpki(tmp_path / "pki", "db", "status")
    assert status.returncode == 1 and "newer than this otpki" in status.stdout
    assert schema_rows(db)[-1] == (future, "from_the_future")


def test_a_new_store_gets_every_migration_and_no_upgrade_record(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "new.db")
    try:
        status = store.schema_status()
        assert status.current and not status.empty and status.pending == []
        with store.read() as tx:
            assert tx.last_audit() is None
    finally:
        store.close()
    assert [n for _, n in schema_rows(tmp_path / "new.db")] == [m.name for m in migrations.migrations("sqlite")]


def test_a_failing_migration_leaves_the_store_at_the_version_before(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Each migration commits with its schema_migrations row or not at all: no half-applied schema."""
    SqliteStore(tmp_path / "s.db").close()
    broken = Migration(migrations.latest("sqlite") + 1, "broken",
                       "CREATE TABLE half_done (a INTEGER);\nINSERT INTO no_such_table VALUES (1);\n")
    known = migrations.migrations("sqlite")
    monkeypatch.setattr(migrations, "migrations", lambda dialect: (*known, broken))
    store = SqliteStore(tmp_path / "s.db", check_schema=False)
    try:
        assert store.schema_status().pending == [f"{broken.version:04d}_broken"]
        with pytest.raises(StoreError):
            store.upgrade()
        assert store.schema_status().version == broken.version - 1
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "s.db") as conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchall() == []
