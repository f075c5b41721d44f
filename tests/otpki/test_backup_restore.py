"""`otpki backup` while an instance keeps issuing, `otpki restore` into a fresh data directory, and what the restored
plant must do: verify its audit chain, number CRLs above the last one published, keep issuing without reusing a
serial, and report a certificate issued after the backup as missing (`otpki certs reconcile`). Real processes, a
real SQLite file or a real PostgreSQL cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from otpki.config import load_settings
from otpki.runtime import open_engine
from trustlists.policy import load_default_config
from trustlists.testing import PASSPHRASE, PostgresCluster, make_csr

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 120.0


def otpki(data_dir: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "OTPKI_DATA_DIR": str(data_dir), "OTPKI_CA_PASSPHRASE": PASSPHRASE.decode(), **env}
    return subprocess.run([sys.executable, "-m", "otpki.cli.main", *args], env=full, capture_output=True, text=True,
                          timeout=180, check=False, cwd=ROOT)


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def wait_for(what: str, condition: object) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextmanager
def issuing_instance(data_dir: Path, env: dict[str, str], work: Path) -> Iterator[Path]:
    """A process issuing certificates on the data directory until the block ends; yields its serials file."""
    serials, stop = work / "worker-serials.txt", work / "worker-stop"
    full = {**os.environ, "OTPKI_DATA_DIR": str(data_dir), "OTPKI_CA_PASSPHRASE": PASSPHRASE.decode(), **env}
    proc = subprocess.Popen([sys.executable, "-m", "tests.otpki.backup_issuer_worker", str(serials), str(stop)],
                            env=full, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        yield serials
    finally:
        stop.touch()
        try:
            _, err = proc.communicate(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    assert proc.returncode == 0, err


def issue(data_dir: Path, name: str, out: Path, env: dict[str, str]) -> str:
    assert otpki(data_dir, "owners", "add", "mqtt-device", name, env=env).returncode == 0
    csr = out.with_suffix(".csr")
    csr.write_bytes(make_csr(name))
    res = otpki(data_dir, "certs", "issue", "--group", "mqtt-device", "--owner", name, "--csr", str(csr),
                "--out", str(out), env=env)
    assert res.returncode == 0, res.stderr
    from cryptography import x509

    return format(x509.load_pem_x509_certificates(out.read_bytes())[0].serial_number, "x")


def mqtt_crl(data_dir: Path, env: dict[str, str]) -> tuple[int, bytes]:
    """The MQTT device CA's latest CRL: its number and DER."""
    os.environ.update({"OTPKI_CA_PASSPHRASE": PASSPHRASE.decode()})
    saved = os.environ.get("OTPKI_STORE_URL")
    if "OTPKI_STORE_URL" in env:
        os.environ["OTPKI_STORE_URL"] = env["OTPKI_STORE_URL"]
    try:
        engine = open_engine(load_settings(data_dir))
    finally:
        if saved is None:
            os.environ.pop("OTPKI_STORE_URL", None)
        else:
            os.environ["OTPKI_STORE_URL"] = saved
    try:
        ca = next(ca for ca in engine.hierarchy.list() if ca.group == "mqtt-device")
        crl = engine.latest_crl(ca.id)
        assert crl is not None
        return crl.crl_number, crl.der
    finally:
        engine.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_backup_while_issuing_then_restore_on_a_fresh_machine(backend: str, tmp_path: Path,
                                                              request: pytest.FixtureRequest) -> None:
    env: dict[str, str] = {}
    restored_env: dict[str, str] = {}
    restore_args: list[str] = []
    if backend == "postgresql":
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        env = {"OTPKI_STORE_URL": cluster.database()}
        restored_url = cluster.database()
        restored_env = {"OTPKI_STORE_URL": restored_url}
        restore_args = ["--store", restored_url]
    plant = tmp_path / "plant"
    assert otpki(plant, "init", env=env).returncode == 0
    before = issue(plant, "pump-1", tmp_path / "pump-1.pem", env)
    backup_dir = tmp_path / "backup"

    with issuing_instance(plant, env, tmp_path) as serials:
        wait_for("the instance to issue", lambda: len(lines(serials)) >= 2)
        started = len(lines(serials))
        taken = otpki(plant, "backup", str(backup_dir), "--json", env=env)
        assert taken.returncode == 0, taken.stderr
        # The instance kept serving: it goes on issuing after the backup, unhindered.
        wait_for("the instance to issue after the backup", lambda: len(lines(serials)) >= started + 3)
    worker_serials = lines(serials)
    manifest = json.loads(taken.stdout)
    assert manifest["audit_records"] > 0 and not manifest["hsm_keys"]

    # Key files stay encrypted; no secret beside them.
    key_files = sorted((backup_dir / "keys").glob("*.key.pem"))
    assert len(key_files) == 1 + len(load_default_config().groups)  # the root and one issuing CA per group
    for f in key_files:
        assert f.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        assert f.stat().st_mode & 0o077 == 0
    for f in backup_dir.rglob("*"):
        if f.is_file():
            assert PASSPHRASE not in f.read_bytes(), f

    # After the backup: a certificate issued, one revoked (a CRL published the backup never saw).
    after = issue(plant, "pump-2", tmp_path / "pump-2.pem", env)
    assert otpki(plant, "certs", "revoke", before, "--reason", "key-compromise", env=env).returncode == 0
    published_number, published_crl = mqtt_crl(plant, env)
    (tmp_path / "published.crl").write_bytes(published_crl)

    # A fresh machine: a new data directory elsewhere, the backup its only input.
    fresh = tmp_path / "elsewhere" / "plant"
    restored = otpki(fresh, "restore", str(backup_dir), *restore_args, "--json", env=restored_env)
    assert restored.returncode == 0, restored.stderr
    verified = otpki(fresh, "audit", "verify", env=restored_env)
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stdout + verified.stderr

    listed = {c["serial"] for c in json.loads(otpki(fresh, "certs", "list", "--json", env=restored_env).stdout)}
    # A consistent snapshot: the instance's certificates in it are exactly the first k it issued.
    in_backup = [s for s in worker_serials if s in listed]
    assert in_backup == worker_serials[:len(in_backup)] and len(in_backup) >= started
    assert len(in_backup) < len(worker_serials)  # what it issued after the backup is not there
    assert before in listed and after not in listed

    # Reconcile names the certificate issued after the backup, and the revocation and CRL it missed.
    rec = otpki(fresh, "certs", "reconcile", str(tmp_path / "pump-1.pem"), str(tmp_path / "pump-2.pem"),
                str(tmp_path / "published.crl"), "--json", env=restored_env)
    assert rec.returncode == 1, rec.stderr
    findings = json.loads(rec.stdout)["findings"]
    assert {(f["kind"], f["serial"]) for f in findings} == {
        ("certificate_missing", after), ("revoked_serial_missing", before)}

    # Issuance goes on: no serial reused; the next CRL is numbered above the one published after the backup.
    new = issue(fresh, "pump-3", tmp_path / "pump-3.pem", restored_env)
    assert new not in set(worker_serials) | listed | {after}
    assert otpki(fresh, "certs", "revoke", new, "--reason", "superseded", env=restored_env).returncode == 0
    number, _ = mqtt_crl(fresh, restored_env)
    assert number > published_number
    assert otpki(fresh, "audit", "verify", env=restored_env).returncode == 0


def test_backup_and_restore_refuse_what_they_must_in_one_line(tmp_path: Path) -> None:
    plant = tmp_path / "plant"
    assert otpki(plant, "init", env={}).returncode == 0

    def refused(res: subprocess.CompletedProcess[str], words: str) -> None:
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and words in res.stderr, res.stderr

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "something").write_text("x")
    refused(otpki(plant, "backup", str(occupied), env={}), "not an empty directory")

    backup_dir = tmp_path / "backup"
    assert otpki(plant, "backup", str(backup_dir), env={}).returncode == 0
    refused(otpki(plant, "restore", str(backup_dir), env={}), "not an empty directory")  # the plant itself
    key = next((backup_dir / "keys").glob("*.key.pem"))
    key.chmod(0o600)
    good = key.read_bytes()
    key.write_bytes(good.replace(b"A", b"B", 1))
    refused(otpki(tmp_path / "fresh", "restore", str(backup_dir), env={}), "SHA-256 differs")
    assert not (tmp_path / "fresh").exists() or not any((tmp_path / "fresh").iterdir())
    key.write_bytes(good)
    (backup_dir / "manifest.json").unlink()
    refused(otpki(tmp_path / "fresh", "restore", str(backup_dir), env={}), "not a complete otpki backup")

    # A key file in clear in the data directory is not carried into a backup.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    clear = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (plant / "keys" / "stray.key.pem").write_bytes(clear)
    refused(otpki(plant, "backup", str(tmp_path / "backup2"), env={}), "is not encrypted")
    assert not (tmp_path / "backup2").exists()


def trust_version(data_dir: Path, group: str, env: dict[str, str]) -> int:
    shown = otpki(data_dir, "trustlist", "show", group, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    return int(json.loads(shown.stdout)["version"])


def test_restored_trust_lists_are_numbered_above_every_version_handed_out_after_the_backup(tmp_path: Path) -> None:
    plant = tmp_path / "plant"
    assert otpki(plant, "init", env={}).returncode == 0
    in_backup = trust_version(plant, "mqtt-device", {})
    backup_dir = tmp_path / "backup"
    assert otpki(plant, "backup", str(backup_dir), env={}).returncode == 0

    # After the backup: new CRLs, so new trust-list versions handed to the plant; and the first version of a group
    # the backup has none of.
    for _ in range(3):
        assert otpki(plant, "crl", "refresh", "--force", env={}).returncode == 0
    handed_out = trust_version(plant, "mqtt-device", {})
    assert handed_out > in_backup
    new_group = trust_version(plant, "opcua-user", {})

    fresh = tmp_path / "fresh"
    restored = otpki(fresh, "restore", str(backup_dir), "--json", env={})
    assert restored.returncode == 0, restored.stderr
    # What the restored plant offers at once, before anything changes: newer than anything handed out.
    offered = trust_version(fresh, "mqtt-device", {})
    assert offered > handed_out
    assert trust_version(fresh, "opcua-user", {}) > new_group
    floor = json.loads(restored.stdout)["copy_"]["trust_version_floor"]
    assert offered == floor - 1
    # And what it publishes next goes on above it.
    assert otpki(fresh, "crl", "refresh", "--force", env={}).returncode == 0
    assert trust_version(fresh, "mqtt-device", {}) > offered

    # The floor is in the audit chain, in the restore's own record.
    log = json.loads(otpki(fresh, "audit", "log", "--json", "--last", "1000", env={}).stdout)
    restore_record = next(r for r in log if r["action"] == "store.restore")
    assert restore_record["details"]["trust_version_floor"] == floor
    assert restore_record["details"]["trust_list_versions"]["mqtt-device"] == offered
    assert otpki(fresh, "audit", "verify", env={}).returncode == 0

    # A gap below one is refused in one line.
    res = otpki(tmp_path / "fresh2", "restore", str(backup_dir), "--trust-version-gap", "0", env={})
    assert res.returncode == 2 and "--trust-version-gap must be at least 1" in res.stderr, res.stderr


def test_a_restore_into_another_database_names_it_in_the_restored_configuration(
        postgres_cluster: PostgresCluster, tmp_path: Path) -> None:
    """After `restore --store URL`, the data directory runs on that database without OTPKI_STORE_URL: before, an
    instance started on it made itself a new, empty SQLite store and served an empty plant."""
    plant = tmp_path / "plant"
    assert otpki(plant, "init", env={}).returncode == 0
    serial = issue(plant, "pump-1", tmp_path / "pump-1.pem", {})
    backup_dir = tmp_path / "backup"
    assert otpki(plant, "backup", str(backup_dir), env={}).returncode == 0

    url = postgres_cluster.database()
    with_password = url.replace("postgresql://postgres@", "postgresql://postgres:not-in-any-file@")
    fresh = tmp_path / "fresh"
    restored = otpki(fresh, "restore", str(backup_dir), "--store", with_password, env={})
    assert restored.returncode == 0, restored.stderr
    assert "not-in-any-file" not in (fresh / "otpki.toml").read_text()  # never a password in otpki.toml
    listed = otpki(fresh, "certs", "list", "--json", env={})  # no OTPKI_STORE_URL
    assert listed.returncode == 0, listed.stderr
    assert [c["serial"] for c in json.loads(listed.stdout)] == [serial]
    assert not (fresh / "otpki.db").exists()
