"""Two `otpki backup` into one directory, or two `otpki restore` into one data directory, at the same moment (real
processes): one fills it, the other is refused in one line, and the refused one leaves the winner's work alone. A
directory half filled by either (the loser cleaning up after itself) must never be the result."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.otpki.cli_at_once import ROOT, at_once, otpki_env
from trustlists.testing import PostgresCluster

ROUNDS = 2


def otpki(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "otpki.cli.main", *args], env=otpki_env(data_dir),
                          capture_output=True, text=True, timeout=180, check=False, cwd=ROOT)


def one_winner(results: list[tuple[int, str]]) -> None:
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert loser.count("\n") == 1, loser


def test_two_backups_into_one_directory_at_once(tmp_path: Path) -> None:
    plant = tmp_path / "plant"
    assert otpki(plant, "init").returncode == 0
    for n in range(ROUNDS):
        dest = tmp_path / f"backup-{n}"
        one_winner(at_once((otpki_env(plant), ["backup", str(dest)]), (otpki_env(plant), ["backup", str(dest)])))
        # The winner's backup is whole: every file its manifest lists, each as it was taken.
        restored = otpki(tmp_path / f"check-{n}", "restore", str(dest))
        assert restored.returncode == 0, restored.stderr


def test_two_restores_into_one_data_directory_at_once(tmp_path: Path) -> None:
    plant = tmp_path / "plant"
    assert otpki(plant, "init").returncode == 0
    backup = tmp_path / "backup"
    assert otpki(plant, "backup", str(backup)).returncode == 0
    for n in range(ROUNDS):
        fresh = tmp_path / f"fresh-{n}"
        one_winner(at_once((otpki_env(fresh), ["restore", str(backup)]), (otpki_env(fresh), ["restore", str(backup)])))
        verified = otpki(fresh, "audit", "verify")
        assert verified.returncode == 0 and "intact" in verified.stdout, verified.stdout + verified.stderr
        assert otpki(fresh, "ca", "list").returncode == 0
        assert not [p.name for p in fresh.iterdir() if p.name.startswith(".otpki")]  # no marker left


def test_backup_and_restore_leave_a_directory_another_process_is_filling_alone(tmp_path: Path) -> None:
    """The race above made certain: the other process's claim file and work are there already."""
    plant = tmp_path / "plant"
    assert otpki(plant, "init").returncode == 0
    backup = tmp_path / "backup"
    assert otpki(plant, "backup", str(backup)).returncode == 0
    for name, run in (("busy-backup", lambda d: otpki(plant, "backup", str(d))),
                      ("busy-restore", lambda d: otpki(d, "restore", str(backup)))):
        busy = tmp_path / name
        busy.mkdir()
        (busy / ".otpki-busy").write_bytes(b"")
        res = run(busy)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
        assert "being filled by another otpki process" in res.stderr, res.stderr
        assert [p.name for p in busy.iterdir()] == [".otpki-busy"]


def test_two_restores_into_one_database_at_once(postgres_cluster: PostgresCluster, tmp_path: Path) -> None:
    """Two hosts restoring the same backup into the same PostgreSQL database: one wins, the other is told at once
    that the database is being (or was) restored into, never that it was locked past its busy timeout."""
    plant = tmp_path / "plant"
    assert otpki(plant, "init").returncode == 0
    # A short busy timeout (carried into the restores by the backup's otpki.toml): a loser that waits for the
    # winner's copy instead of being refused would run into it.
    config = plant / "otpki.toml"
    config.write_text(config.read_text() + "\n[store]\nbusy_timeout_s = 0.05\n")
    backup = tmp_path / "backup"
    assert otpki(plant, "backup", str(backup)).returncode == 0
    for n in range(ROUNDS):
        url = postgres_cluster.database()
        results = at_once((otpki_env(tmp_path / f"host-a-{n}"), ["restore", str(backup), "--store", url]),
                          (otpki_env(tmp_path / f"host-b-{n}"), ["restore", str(backup), "--store", url]))
        one_winner(results)
        loser = next(err for code, err in results if code == 2)
        assert "is writing into" in loser or "is not empty" in loser, loser
