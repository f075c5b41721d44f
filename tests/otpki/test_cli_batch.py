"""`otpki batch sign` as a factory line runs it: real processes on one SQLite data directory, killed with
SIGKILL at chosen points and run again, or two at once over overlapping CSRs (issue 10, part 5).

Converged means: exactly one certificate in the inventory per CSR (none revoked, superseded or expired),
each CSR's file holding that certificate for that CSR's key, and no temp file left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from typer.testing import CliRunner

from otpki.cli.main import app
from tests.otpki.batch_kill_points import FIXED_SERIAL
from trustlists.testing import make_csr, new_key

PASS = "a long enough test passphrase"
REPO = Path(__file__).resolve().parents[2]
OTPKI = [str(Path(sys.executable).parent / "otpki")]
KILLABLE = [sys.executable, "-m", "tests.otpki.batch_kill_points"]
DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def initialized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("batch-init") / "pki"
    cfg = d.parent / "in.toml"
    cfg.write_text('[pki.root]\nkey_type = "ec-p384"\n')
    res = CliRunner().invoke(app, ["-d", str(d), "init", "--config", str(cfg)], env={"OTPKI_CA_PASSPHRASE": PASS})
    assert res.exit_code == 0, res.output
    return d


@pytest.fixture
def data_dir(initialized: Path, tmp_path: Path) -> Path:
    """A copy of one initialized data directory per test (making CA keys for each would dominate the run)."""
    return Path(shutil.copytree(initialized, tmp_path / "pki"))


def env_for(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "OTPKI_CA_PASSPHRASE": PASS, "OTPKI_DATA_DIR": str(data_dir)}


def write_csrs(in_dir: Path, names: list[str]) -> dict[str, PrivateKeyTypes]:
    in_dir.mkdir(parents=True, exist_ok=True)
    keys: dict[str, PrivateKeyTypes] = {}
    for name in names:
        keys[name] = new_key()
        (in_dir / f"{name}.csr").write_bytes(make_csr(name, key=keys[name]))
    return keys


def sign(data_dir: Path, in_dir: Path, out_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OTPKI, "batch", "sign", str(in_dir), str(out_dir), *extra], env=env_for(data_dir),
                          capture_output=True, text=True, timeout=DEADLINE_S, check=False)


def inventory(data_dir: Path) -> list[tuple[str, str, int | None, str | None]]:
    """(serial, subject, revoked_at, superseded_by) of every certificate, read straight from the store."""
    con = sqlite3.connect(f"file:{data_dir / 'otpki.db'}?mode=ro", uri=True)
    try:
        return con.execute("SELECT serial, subject, revoked_at, superseded_by FROM certificates").fetchall()
    finally:
        con.close()


def spki(key: PrivateKeyTypes) -> bytes:
    return key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def assert_converged(data_dir: Path, out_dir: Path, keys: dict[str, PrivateKeyTypes]) -> dict[str, str]:
    """One live certificate per CSR, on disk, for the CSR's key; returns name -> serial."""
    rows = inventory(data_dir)
    assert sorted(r[1] for r in rows) == sorted(f"CN={n}" for n in keys), "one certificate per CSR, no more"
    assert all(r[2] is None and r[3] is None for r in rows)
    serial_of = {r[1].removeprefix("CN="): r[0] for r in rows}
    for name, key in keys.items():
        leaf = x509.load_pem_x509_certificates((out_dir / f"{name}.crt").read_bytes())[0]
        assert format(leaf.serial_number, "x") == serial_of[name]
        assert leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) == spki(key)
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(f"{n}.crt" for n in keys), "no temp files left"
    return serial_of


# (kill point, on which call, certificates the killed run had recorded); chunks of 3, 8 CSRs. A chunk's files
# are durable before its rows commit, so a kill among the files leaves the chunk unrecorded.
@pytest.mark.parametrize(("point", "n", "recorded"), [
    ("registered", 1, 0),     # the first chunk's registrations inserted, not committed
    ("issuing", 2, 3),        # the second chunk's owners registered, its certificates not signed
    ("before-commit", 1, 0),  # the first chunk's files on disk, its rows not committed
    ("committed", 1, 3),      # the first chunk recorded (its files were written before)
    ("committed", 2, 6),      # two chunks recorded
    ("temp-file", 5, 3),      # a temp file of the second chunk flushed but never renamed
    ("renamed", 4, 3),        # in the middle of the second chunk's renames
])
def test_kill_9_at_a_point_then_rerun_converges(data_dir: Path, tmp_path: Path, point: str, n: int,
                                                recorded: int) -> None:
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    keys = write_csrs(in_dir, [f"line7-dev-{i}" for i in range(8)])
    killed = subprocess.run([*KILLABLE, point, str(n), "--", "batch", "sign", str(in_dir), str(out_dir),
                             "--workers", "1"],
                            env=env_for(data_dir), cwd=REPO, capture_output=True, text=True, timeout=DEADLINE_S,
                            check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(inventory(data_dir)) == recorded
    if point == "temp-file":
        assert list(out_dir.glob(".line7-dev-*.crt.*.tmp")), "a temp file was left behind"

    rerun = sign(data_dir, in_dir, out_dir, "--json")
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    serials = assert_converged(data_dir, out_dir, keys)
    assert (report["issued"], report["reused"]) == (len(keys) - recorded, recorded)

    # Once more: nothing new, every certificate handed back, the same serials.
    third = sign(data_dir, in_dir, out_dir)
    assert third.returncode == 0, third.stderr
    assert f"0 issued, {len(keys)} reused, 0 failed" in third.stdout
    assert assert_converged(data_dir, out_dir, keys) == serials


def processes_with(text: str) -> list[int]:
    """Pids of the live processes whose command line holds `text`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue  # ended meanwhile
            if text.encode() in cmdline and state != "Z":
                pids.append(int(proc.name))
    return pids


def test_kill_9_from_outside_mid_run_then_rerun_converges(data_dir: Path, tmp_path: Path) -> None:
    """The command is killed with its workers signing (the default: one per core); the workers die with it,
    and the next run completes the batch."""
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    keys = write_csrs(in_dir, [f"line8-dev-{i:03}" for i in range(200)])  # chunks of 3: long enough to be cut
    proc = subprocess.Popen([*KILLABLE, "none", "0", "--", "batch", "sign", str(in_dir), str(out_dir)],
                            env=env_for(data_dir), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while proc.poll() is None and len(inventory(data_dir)) < 6:  # a couple of chunks recorded
            assert time.monotonic() < deadline, "the batch recorded nothing in time"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=DEADLINE_S)
    assert proc.returncode == -signal.SIGKILL, "the batch finished before it could be killed"
    deadline = time.monotonic() + 10.0
    while (orphans := processes_with(str(in_dir))) and time.monotonic() < deadline:  # workers carry its cmdline
        time.sleep(0.01)
    for pid in orphans:  # the test cleans up what it started, then fails
        os.kill(pid, signal.SIGKILL)
    assert not orphans, "a worker kept signing after the command was killed"
    rerun = sign(data_dir, in_dir, out_dir, "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert_converged(data_dir, out_dir, keys)


def test_two_batches_at_once_over_overlapping_csrs(data_dir: Path, tmp_path: Path) -> None:
    """Two stations sign overlapping CSR sets into one output directory at the same time."""
    keys = write_csrs(tmp_path / "all", [f"line9-dev-{i:03}" for i in range(200)])
    halves = {"a": range(0, 150), "b": range(50, 200)}
    for station, indexes in halves.items():
        (tmp_path / station).mkdir()
        for i in indexes:
            shutil.copy(tmp_path / "all" / f"line9-dev-{i:03}.csr", tmp_path / station)
    out_dir = tmp_path / "out"
    procs = {station: subprocess.Popen([*OTPKI, "batch", "sign", str(tmp_path / station), str(out_dir), "--json"],
                                       env=env_for(data_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
             for station in halves}
    reports = {}
    for station, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=DEADLINE_S)
        assert proc.returncode == 0, stderr
        reports[station] = json.loads(stdout)
    for station, report in reports.items():
        assert report["failed"] == 0
        assert report["issued"] + report["reused"] == len(halves[station])
    # Every certificate was signed by exactly one of the two.
    assert reports["a"]["issued"] + reports["b"]["issued"] == len(keys)
    serials = assert_converged(data_dir, out_dir, keys)
    for report in reports.values():
        assert {i["serial"] for i in report["items"]} <= set(serials.values())


def test_workers_sign_every_csr_once_across_processes(data_dir: Path, tmp_path: Path) -> None:
    names = [f"dev-{i:03d}" for i in range(60)]
    in_dir = tmp_path / "in"
    write_csrs(in_dir, names)
    (in_dir / "dev-007.pem").write_bytes(make_csr("dev-007"))  # a second CSR for one certificate file
    res = sign(data_dir, in_dir, tmp_path / "out", "--workers", "3", "--json")
    assert res.returncode == 1, res.stderr  # one CSR refused
    report = json.loads(res.stdout)
    assert (report["issued"], report["reused"], report["failed"]) == (60, 0, 1)
    assert [i["file"] for i in report["items"]] == sorted(i["file"] for i in report["items"])
    assert [(i["file"], i["reason"]) for i in report["items"] if not i["ok"]] == [("dev-007.pem", "output_name_clash")]
    rows = inventory(data_dir)
    assert len(rows) == len({r[0] for r in rows}) == 60 and {r[1].split("=")[-1] for r in rows} >= set(names)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{n}.crt" for n in names]
    verified = subprocess.run([*OTPKI, "audit", "verify"], env=env_for(data_dir), capture_output=True, text=True,
                              timeout=DEADLINE_S, check=False)
    assert verified.returncode == 0, verified.stdout
    # Again with a different number of workers: the shares change, every certificate comes back from the inventory.
    again = json.loads(sign(data_dir, in_dir, tmp_path / "out", "--workers", "2", "--json").stdout)
    assert (again["issued"], again["reused"], again["failed"]) == (0, 60, 1)
    assert len(inventory(data_dir)) == 60


def reconcile(data_dir: Path, files: list[Path]) -> dict[str, object]:
    res = subprocess.run([*OTPKI, "certs", "reconcile", *map(str, files), "--json"], env=env_for(data_dir),
                         capture_output=True, text=True, timeout=DEADLINE_S, check=False)
    assert res.returncode in (0, 1), res.stderr
    return json.loads(res.stdout)


@pytest.mark.parametrize(("point", "n", "unrecorded_files"), [
    ("temp-file", 2, 1),      # the first chunk's temp files written, one renamed
    ("renamed", 3, 3),        # the first chunk's files in place, the directory not flushed yet
    ("before-commit", 2, 3),  # the second chunk's files durable, its rows not committed
    ("committed", 1, 0),      # the first chunk recorded
])
def test_a_crash_mid_chunk_never_leaves_a_recorded_certificate_without_its_file(
        data_dir: Path, tmp_path: Path, point: str, n: int, unrecorded_files: int) -> None:
    """No lost record: after a kill anywhere in a chunk, every certificate the inventory holds is in its file,
    and every certificate file the inventory does not hold is named by `otpki certs reconcile` (then the next
    run replaces it and reconcile finds nothing)."""
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    keys = write_csrs(in_dir, [f"line6-dev-{i}" for i in range(8)])
    killed = subprocess.run([*KILLABLE, point, str(n), "--", "batch", "sign", str(in_dir), str(out_dir),
                             "--workers", "1"],
                            env=env_for(data_dir), cwd=REPO, capture_output=True, text=True, timeout=DEADLINE_S,
                            check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    recorded = {serial: subject.removeprefix("CN=") for serial, subject, _r, _s in inventory(data_dir)}
    on_disk = {p.stem: format(x509.load_pem_x509_certificates(p.read_bytes())[0].serial_number, "x")
               for p in out_dir.glob("*.crt")}
    for serial, name in recorded.items():
        assert on_disk.get(name) == serial, f"{name}: certificate {serial} is recorded, its file does not hold it"
    unrecorded = {serial for serial in on_disk.values() if serial not in recorded}
    assert len(unrecorded) == unrecorded_files
    if on_disk:
        found = reconcile(data_dir, sorted(out_dir.glob("*.crt")))
        assert {(f["kind"], f["serial"]) for f in found["findings"]} == {("certificate_missing", s) for s in unrecorded}

    rerun = sign(data_dir, in_dir, out_dir, "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert_converged(data_dir, out_dir, keys)
    assert reconcile(data_dir, sorted(out_dir.glob("*.crt")))["ok"] is True


def audit_rows(data_dir: Path) -> list[tuple[str, str]]:
    con = sqlite3.connect(f"file:{data_dir / 'otpki.db'}?mode=ro", uri=True)
    try:
        return con.execute("SELECT action, subject FROM audit_log ORDER BY seq").fetchall()
    finally:
        con.close()


def test_default_workers_use_every_core_and_keep_one_audit_chain(data_dir: Path, tmp_path: Path) -> None:
    cores = os.cpu_count() or 1
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    keys = write_csrs(in_dir, [f"line5-dev-{i:03d}" for i in range(250)])  # several chunks per worker
    before = len(audit_rows(data_dir))
    res = sign(data_dir, in_dir, out_dir)
    assert res.returncode == 0, res.stderr
    assert "250 issued, 0 reused, 0 failed" in res.stdout
    assert [line for line in res.stderr.splitlines() if line.startswith("worker ")] == (
        [f"worker {i}/{cores} done" for i in range(1, cores + 1)] if cores > 1 else [])
    serials = assert_converged(data_dir, out_dir, keys)
    verified = subprocess.run([*OTPKI, "audit", "verify"], env=env_for(data_dir), capture_output=True, text=True,
                              timeout=DEADLINE_S, check=False)
    assert verified.returncode == 0, verified.stdout
    # One record per registration and per certificate, each naming what it is about, in the one chain.
    new = audit_rows(data_dir)[before:]
    assert sorted(s for a, s in new if a == "certificate.issue") == sorted(serials.values())
    assert len([s for a, s in new if a == "owner.register"]) == len(keys)
    assert len(new) == 2 * len(keys)


def test_workers_that_draw_the_same_serial_never_record_it_twice(data_dir: Path, tmp_path: Path) -> None:
    """Every worker's first certificate carries one fixed serial: the store refuses the second, that worker
    signs again with a fresh serial and its file is rewritten with the certificate that was recorded."""
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    keys = write_csrs(in_dir, [f"line4-dev-{i:02d}" for i in range(12)])
    res = subprocess.run([*KILLABLE, "same-serial", "0", "--", "batch", "sign", str(in_dir), str(out_dir),
                          "--workers", "2", "--json"], env=env_for(data_dir), cwd=REPO, capture_output=True,
                         text=True, timeout=DEADLINE_S, check=False)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert (report["issued"], report["failed"]) == (12, 0)
    serials = assert_converged(data_dir, out_dir, keys)
    assert len(set(serials.values())) == 12
    assert format(FIXED_SERIAL, "x") in serials.values()  # one worker's first certificate, recorded once
    assert {i["serial"] for i in report["items"]} == set(serials.values())
    verified = subprocess.run([*OTPKI, "audit", "verify"], env=env_for(data_dir), capture_output=True, text=True,
                              timeout=DEADLINE_S, check=False)
    assert verified.returncode == 0, verified.stdout


def assert_no_certificate_outside_the_inventory(data_dir: Path, out_dir: Path) -> set[str]:
    """Every certificate the inventory holds is in its file; every certificate file the inventory does not hold
    is named by `otpki certs reconcile`. Returns the recorded serials."""
    recorded = {serial: subject.removeprefix("CN=") for serial, subject, _r, _s in inventory(data_dir)}
    on_disk = {p.stem: format(x509.load_pem_x509_certificates(p.read_bytes())[0].serial_number, "x")
               for p in out_dir.glob("*.crt")}
    for serial, name in recorded.items():
        assert on_disk.get(name) == serial, f"{name}: certificate {serial} is recorded, its file does not hold it"
    unrecorded = {serial for serial in on_disk.values() if serial not in recorded}
    if on_disk:
        found = reconcile(data_dir, sorted(out_dir.glob("*.crt")))
        assert {(f["kind"], f["serial"]) for f in found["findings"]} == {("certificate_missing", s) for s in unrecorded}
    return set(recorded)


# Workers sign and write files, the command flushes and records (otpki.batch_pool); chunks of 3, 20 CSRs over
# two workers. How many chunks one commit carries depends on timing: the kill points count files and
# certificates, and the counts asserted are bounds.
@pytest.mark.parametrize(("point", "n"), [
    ("recorder-flushed", 1),     # the files of the first chunks ready flushed, nothing recorded
    ("recorder-flushed", 10),    # the same, with chunks recorded before (unless one flush carried them all)
    ("recorder-committed", 1),   # the first chunks ready recorded
    ("recorder-committed", 10),  # at least 10 certificates recorded (all of them if one commit carried them)
])
def test_a_kill_between_the_pipeline_stages_leaves_nothing_outside_the_inventory(
        data_dir: Path, tmp_path: Path, point: str, n: int) -> None:
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    keys = write_csrs(in_dir, [f"line3-dev-{i:02d}" for i in range(20)])
    killed = subprocess.run([*KILLABLE, point, str(n), "--", "batch", "sign", str(in_dir), str(out_dir),
                             "--workers", "2"],
                            env=env_for(data_dir), cwd=REPO, capture_output=True, text=True, timeout=DEADLINE_S,
                            check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    recorded = assert_no_certificate_outside_the_inventory(data_dir, out_dir)
    if point == "recorder-committed":
        assert len(recorded) >= n
    else:
        assert len(recorded) < len(keys) and list(out_dir.glob(".*.crt.*.tmp")), "temp files left, not recorded"
    assert not processes_with(str(in_dir)), "a worker outlived the command"

    rerun = sign(data_dir, in_dir, out_dir, "--workers", "2", "--json")
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert (report["issued"], report["reused"]) == (len(keys) - len(recorded), len(recorded))
    serials = assert_converged(data_dir, out_dir, keys)
    assert reconcile(data_dir, sorted(out_dir.glob("*.crt")))["ok"] is True
    third = json.loads(sign(data_dir, in_dir, out_dir, "--workers", "2", "--json").stdout)
    assert (third["issued"], third["reused"]) == (0, len(keys))
    assert assert_converged(data_dir, out_dir, keys) == serials


@pytest.mark.parametrize(("point", "error"), [
    ("worker-sent", "worker 1: ended without finishing its share (killed?)"),
    ("worker-raises", "worker 1: the store stayed locked (a test's)"),
])
def test_a_worker_lost_mid_share_fails_the_batch_and_a_rerun_completes(data_dir: Path, tmp_path: Path, point: str,
                                                                       error: str) -> None:
    """The other worker's share and what the failed one had sent are recorded; the command says which worker
    failed and why, and exits 2; the next run signs the rest."""
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    keys = write_csrs(in_dir, [f"line2-dev-{i:02d}" for i in range(20)])  # 10 per share: 4 chunks each
    res = subprocess.run([*KILLABLE, point, "1", "--", "batch", "sign", str(in_dir), str(out_dir),
                          "--workers", "2", "--json"],
                         env=env_for(data_dir), cwd=REPO, capture_output=True, text=True, timeout=DEADLINE_S,
                         check=False)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert error in res.stderr
    assert "run the batch again" in res.stderr
    recorded = assert_no_certificate_outside_the_inventory(data_dir, out_dir)
    assert len(recorded) == 10 + 3  # the second share, and the first worker's first chunk
    audit = subprocess.run([*OTPKI, "audit", "verify"], env=env_for(data_dir), capture_output=True, text=True,
                           timeout=DEADLINE_S, check=False)
    assert audit.returncode == 0, audit.stdout

    rerun = json.loads(sign(data_dir, in_dir, out_dir, "--workers", "2", "--json").stdout)
    assert (rerun["issued"], rerun["reused"], rerun["failed"]) == (len(keys) - 13, 13, 0)
    assert_converged(data_dir, out_dir, keys)


def test_two_workers_making_one_new_device_register_it_once(data_dir: Path, tmp_path: Path) -> None:
    """Two CSR files for one new device fall into the two workers' shares: each worker makes the device; the
    recorder registers it once, and signs the chunk that came second again for the registered device."""
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    (in_dir / "a.csr").write_bytes(make_csr("line1-dev"))
    (in_dir / "b.csr").write_bytes(make_csr("line1-dev"))  # another key for the same device
    res = sign(data_dir, in_dir, out_dir, "--workers", "2", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert (report["issued"], report["failed"]) == (2, 0)
    assert {i["owner"] for i in report["items"]} == {"line1-dev"}
    rows = inventory(data_dir)
    assert sorted(r[1] for r in rows) == ["CN=line1-dev", "CN=line1-dev"]
    assert [a for a, s in audit_rows(data_dir) if a == "owner.register"].count("owner.register") == 1
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.crt", "b.crt"]
    on_disk = {format(x509.load_pem_x509_certificates(p.read_bytes())[0].serial_number, "x")
               for p in out_dir.iterdir()}
    assert on_disk == {r[0] for r in rows}
