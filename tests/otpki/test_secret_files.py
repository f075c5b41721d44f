"""Secrets the CLI writes are never readable by others, not even for an instant, not even with umask 0.

The commands run as real processes under tests/secret_exposure_probe.py, which looks at every secret file
before each file operation the process makes (see its docstring).
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from otpki.cli.main import app
from tests.secret_exposure_probe import run_under_probe
from trustlists.safe_files import TEMP_PREFIX

PASS = "a long enough test passphrase"


def probe(tmp_path: Path, watched: list[Path], *args: str):  # type: ignore[no-untyped-def]
    return run_under_probe(tmp_path, watched, *args, env={"OTPKI_CA_PASSPHRASE": PASS})


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    cfg = tmp_path / "in.toml"
    cfg.write_text('[pki.root]\nkey_type = "ec-p256"\n')
    res, exposures = probe(tmp_path, [d], "-d", str(d), "init", "--config", str(cfg), "--site", "north")
    assert res.returncode == 0, res.stderr
    assert exposures == []  # the CA keys
    assert mode(d / "otpki.toml") == 0o600  # it may hold the GDS users' password hashes
    assert mode(d) == 0o700 and mode(d / "keys") == 0o700
    assert all(mode(k) == 0o600 for k in (d / "keys").iterdir())
    return d


def test_key_out_is_never_readable_by_others(data_dir: Path, tmp_path: Path) -> None:
    """Issue #10 §6: `certs issue --key-out` wrote the key world-readable (umask 0) and chmodded it after."""
    runner = CliRunner()
    added = runner.invoke(app, ["-d", str(data_dir), "owners", "add", "mqtt-device", "pump-1", "--site", "north"],
                          env={"OTPKI_CA_PASSPHRASE": PASS})
    assert added.exit_code == 0, added.output
    keys = tmp_path / "delivered" / "keys"
    res, exposures = probe(tmp_path, [keys], "-d", str(data_dir), "certs", "issue", "--group", "mqtt-device",
                           "--owner", "pump-1", "--new-key", "--out", str(tmp_path / "pump-1.pem"),
                           "--key-out", str(keys / "pump-1.key"))
    assert res.returncode == 0, res.stderr
    assert exposures == []
    assert sorted(p.name for p in keys.iterdir()) == ["pump-1.key"]  # no temporary left
    assert mode(keys / "pump-1.key") == 0o600 and mode(keys) == 0o700
    assert b"PRIVATE KEY" in (keys / "pump-1.key").read_bytes()
    assert mode(tmp_path / "pump-1.pem") == 0o644  # the certificate is public


def test_key_out_is_not_written_through_a_planted_symlink(data_dir: Path, tmp_path: Path) -> None:
    """A shared, world-writable output folder: another user plants the name a writer might use next to the
    target. The key must not land in their file."""
    runner = CliRunner()
    env = {"OTPKI_CA_PASSPHRASE": PASS}
    assert runner.invoke(app, ["-d", str(data_dir), "owners", "add", "mqtt-device", "pump-2", "--site", "north"],
                         env=env).exit_code == 0
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    bait = tmp_path / "attacker-readable"
    bait.write_bytes(b"")
    for name in ("pump-2.key.tmp", "pump-2.tmp", "pump-2.key~"):
        (shared / name).symlink_to(bait)
    res = runner.invoke(app, ["-d", str(data_dir), "certs", "issue", "--group", "mqtt-device", "--owner", "pump-2",
                              "--new-key", "--out", str(tmp_path / "pump-2.pem"),
                              "--key-out", str(shared / "pump-2.key")], env=env)
    assert res.exit_code == 0, res.output
    assert bait.read_bytes() == b""
    assert mode(shared / "pump-2.key") == 0o600 and not (shared / "pump-2.key").is_symlink()
    assert not list(shared.glob(TEMP_PREFIX + "*"))


def test_unwritable_key_out_is_one_line_and_exit_2(data_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"OTPKI_CA_PASSPHRASE": PASS}
    assert runner.invoke(app, ["-d", str(data_dir), "owners", "add", "mqtt-device", "pump-3", "--site", "north"],
                         env=env).exit_code == 0
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a folder should be")
    res = runner.invoke(app, ["-d", str(data_dir), "certs", "issue", "--group", "mqtt-device", "--owner", "pump-3",
                              "--new-key", "--out", str(tmp_path / "pump-3.pem"),
                              "--key-out", str(blocker / "pump-3.key")], env=env)
    assert res.exit_code == 2 and "cannot write" in res.output and "Traceback" not in res.output, res.output


def test_doctor_flags_secret_files_others_can_read(data_dir: Path) -> None:
    """What an older otpki left behind: a dynsec file mosquitto_ctrl made 0644 (Mosquitto keeps that mode
    whenever it saves the file), a key file chmodded by hand."""
    import json

    runner = CliRunner()
    workdir = data_dir / "mosquitto"
    workdir.mkdir()
    (workdir / "dynamic-security.json").write_text('{"clients": []}')
    (workdir / "dynamic-security.json").chmod(0o644)
    (workdir / "server.key").write_text("key")
    (workdir / "server.key").chmod(0o640)
    (workdir / "ca.pem").write_text("public")
    (workdir / "ca.pem").chmod(0o644)

    def secret_findings() -> list[tuple[str, str]]:
        res = runner.invoke(app, ["-d", str(data_dir), "doctor", "--json"], env={"OTPKI_CA_PASSPHRASE": PASS})
        return sorted((f["subject"], f["level"]) for f in json.loads(res.stdout)["findings"]
                      if f["check"] == "secret-file")

    assert secret_findings() == [(str(workdir / "dynamic-security.json"), "fail"),
                                 (str(workdir / "server.key"), "fail")]
    for name in ("dynamic-security.json", "server.key"):
        (workdir / name).chmod(0o600)
    assert secret_findings() == [("keys and dynsec file", "ok")]
