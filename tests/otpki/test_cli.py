"""The otpki CLI: the commands of issue 2 and their error behaviour (one line, exit code 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyotp
import pytest
from typer.testing import CliRunner

from otpki.cli.main import app
from otpki.config import load_settings
from otpki.runtime import open_engine
from trustlists.accounts import AccountPolicy
from trustlists.policy import load_default_config
from trustlists.testing import make_csr

PASS = "a long enough test passphrase"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, runner: CliRunner) -> Path:
    d = tmp_path / "pki"
    cfg = tmp_path / "in.toml"
    cfg.write_text('[pki.root]\nkey_type = "ec-p384"\n')
    result = runner.invoke(app, ["-d", str(d), "init", "--config", str(cfg), "--site", "north"],
                           env={"OTPKI_CA_PASSPHRASE": PASS})
    assert result.exit_code == 0, result.output
    return d


def run(runner: CliRunner, d: Path, *args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["-d", str(d), *args], env={"OTPKI_CA_PASSPHRASE": PASS, **(env or {})})


def test_full_cli_lifecycle(runner: CliRunner, data_dir: Path, tmp_path: Path) -> None:
    out = run(runner, data_dir, "ca", "list", "--json")
    assert out.exit_code == 0
    assert {c["id"] for c in json.loads(out.stdout)} == {"root", *load_default_config().groups}
    assert run(runner, data_dir, "owners", "add", "opcua-application", "scada-1", "--uri", "urn:scada-1",
               "--dns", "scada-1").exit_code == 0
    csr = tmp_path / "scada.csr"
    csr.write_bytes(make_csr("scada-1", uris=["urn:scada-1"]))
    res = run(runner, data_dir, "certs", "issue", "--group", "opcua-application", "--owner", "scada-1",
              "--csr", str(csr), "--out", str(tmp_path / "scada.pem"))
    assert res.exit_code == 0, res.output
    listed = json.loads(run(runner, data_dir, "certs", "list", "--json").stdout)
    assert len(listed) == 1 and listed[0]["status"] == "active"
    serial = listed[0]["serial"]
    assert json.loads(run(runner, data_dir, "certs", "show", serial, "--json").stdout)["serial"] == serial
    assert json.loads(run(runner, data_dir, "certs", "list", "--expiring", "30d", "--json").stdout) == []
    assert len(json.loads(run(runner, data_dir, "certs", "list", "--expiring", "800d", "--json").stdout)) == 1
    tl_before = json.loads(run(runner, data_dir, "trustlist", "show", "opcua-application", "--json").stdout)
    res = run(runner, data_dir, "certs", "revoke", serial, "--reason", "key-compromise")
    assert res.exit_code == 0, res.output
    tl_after = json.loads(run(runner, data_dir, "trustlist", "show", "opcua-application", "--json").stdout)
    assert tl_after["version"] == tl_before["version"] + 1
    for fmt, target in (("pki", "pki"), ("mosquitto", "mq"), ("binary", "tl.bin"), ("json", "tl.json")):
        res = run(runner, data_dir, "trustlist", "export", "opcua-application", "--format", fmt,
                  "--out", str(tmp_path / target))
        assert res.exit_code == 0, res.output
    assert (tmp_path / "mq" / "crl.pem").read_bytes().startswith(b"-----BEGIN X509 CRL")
    assert run(runner, data_dir, "audit", "verify").exit_code == 0
    # Server-side key generation writes the key with private permissions.
    assert run(runner, data_dir, "owners", "add", "mqtt-device", "pump-1").exit_code == 0
    pw = tmp_path / "pw"
    pw.write_text("device-pfx-password")
    res = run(runner, data_dir, "certs", "issue", "--group", "mqtt-device", "--owner", "pump-1", "--new-key",
              "--key-format", "pkcs12", "--password-file", str(pw), "--out", str(tmp_path / "p.pem"),
              "--key-out", str(tmp_path / "p.p12"))
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p.p12").stat().st_mode & 0o077 == 0


def test_batch_sign_cli(runner: CliRunner, data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csr").write_bytes(make_csr("dev-a"))
    (tmp_path / "in" / "b.csr").write_bytes(b"broken")
    res = run(runner, data_dir, "batch", "sign", str(tmp_path / "in"), str(tmp_path / "out"), "--json")
    assert res.exit_code == 1  # a failure is listed and reported in the exit code
    report = json.loads(res.stdout)
    assert (report["issued"], report["failed"]) == (1, 1)
    listed = json.loads(run(runner, data_dir, "certs", "list", "--status", "issued-not-delivered", "--json").stdout)
    assert len(listed) == 1


def test_audit_verify_fails_on_tampering(runner: CliRunner, data_dir: Path) -> None:
    import sqlite3

    con = sqlite3.connect(data_dir / "otpki.db")
    con.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
    con.commit()
    con.close()
    res = run(runner, data_dir, "audit", "verify")
    assert res.exit_code == 1 and "record 2" in res.output


@pytest.mark.parametrize("args, env, message", [
    (["certs", "list"], {}, "no otpki data directory"),
])
def test_missing_data_directory(runner: CliRunner, tmp_path: Path, args, env, message) -> None:  # type: ignore[no-untyped-def]
    res = run(runner, tmp_path / "nowhere", *args, env=env)
    assert res.exit_code == 2 and message in res.output


def test_bad_input_errors(runner: CliRunner, data_dir: Path, tmp_path: Path) -> None:
    run(runner, data_dir, "owners", "add", "mqtt-device", "pump-9")
    bad = tmp_path / "bad.csr"
    bad.write_bytes(b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n")
    cases = [
        (["certs", "issue", "--group", "mqtt-device", "--owner", "pump-9", "--csr", str(bad)], {},
         "certificate signing request"),
        (["certs", "issue", "--group", "nope", "--owner", "pump-9", "--csr", str(bad)], {},
         "unknown certificate group"),
        (["certs", "issue", "--group", "mqtt-device", "--owner", "pump-9", "--csr", str(tmp_path / "missing")], {},
         "does not exist"),
        (["certs", "revoke", "deadbeef"], {}, "no certificate with serial"),
        (["certs", "revoke", "deadbeef", "--reason", "boredom"], {}, "unknown revocation reason"),
        (["certs", "list", "--expiring", "soon"], {}, "is not a duration"),
        (["trustlist", "show", "nope"], {}, "unknown certificate group"),
        (["init"], {}, "already initialised"),
    ]
    for args, env, message in cases:
        res = run(runner, data_dir, *args, env=env)
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output, (args, res.output)
        assert "Traceback" not in res.output
    good = tmp_path / "good.csr"
    good.write_bytes(make_csr("pump-9"))
    res = run(runner, data_dir, "certs", "issue", "--group", "mqtt-device", "--owner", "pump-9", "--csr", str(good),
              env={"OTPKI_CA_PASSPHRASE": "the wrong passphrase"})
    assert res.exit_code == 2 and "wrong passphrase" in res.output
    res = runner.invoke(app, ["-d", str(data_dir), "certs", "issue", "--group", "mqtt-device", "--owner", "pump-9",
                              "--csr", str(good)], env={"OTPKI_CA_PASSPHRASE": ""})
    assert res.exit_code == 2 and "OTPKI_CA_PASSPHRASE" in res.output


def test_console_script_help_and_exit_code(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "otpki"
    assert exe.exists(), "the otpki console script is not installed (pip install -e .)"
    res = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=False)
    assert res.returncode == 0
    for cmd in ("init", "ca", "certs", "trustlist", "audit", "batch", "demo"):
        assert cmd in res.stdout
    res = subprocess.run([str(exe), "-d", str(tmp_path / "x"), "ca", "list"], capture_output=True, text=True,
                         check=False, env={**os.environ, "OTPKI_CA_PASSPHRASE": PASS})
    assert res.returncode == 2 and "otpki init" in res.stderr


def test_init_with_hsm_and_wrong_pin(runner: CliRunner, tmp_path: Path) -> None:
    from tests.softhsm import softhsm_token

    token = softhsm_token(prefix="cli")
    cfg = tmp_path / "hsm.toml"
    cfg.write_text(f'[keys.pkcs11]\nmodule = "{token.module}"\ntoken_label = "{token.label}"\n'
                   '[pki]\norganization = "ACME"\n'
                   '[pki.root]\nkey_type = "ec-p384"\n')  # RSA roots on a token: tests/trustlists/test_hierarchy.py
    d = tmp_path / "hsm-pki"
    res = runner.invoke(app, ["-d", str(d), "init", "--hsm", "--config", str(cfg), "--site", "north", "--json"],
                        env={"OTPKI_HSM_PIN": token.pin, "OTPKI_CA_PASSPHRASE": ""})
    assert res.exit_code == 0, res.output
    cas = json.loads(res.stdout)
    assert {c["key_backend"] for c in cas} == {"pkcs11"}
    assert not (d / "keys").exists()
    # No passphrase in an HSM-only setup: the key sealing the console's TOTP secrets is a 0600 file init made.
    sealing = d / "console-secrets.key"
    assert sealing.stat().st_mode & 0o777 == 0o600
    added = runner.invoke(app, ["-d", str(d), "users", "add", "alice", "--role", "ca-admin", "--json"],
                          input="console password 1\n", env={"OTPKI_HSM_PIN": token.pin, "OTPKI_CA_PASSPHRASE": ""})
    assert added.exit_code == 0, added.output
    secret = json.loads(added.stdout)["totp_secret"]
    eng = open_engine(load_settings(d))
    try:
        eng.accounts.check_totp("alice", pyotp.TOTP(secret).now(), client="t", policy=AccountPolicy())
    finally:
        eng.close()
    assert run(runner, d, "owners", "add", "mqtt-device", "pump-1", env={"OTPKI_HSM_PIN": token.pin}).exit_code == 0
    csr = tmp_path / "p.csr"
    csr.write_bytes(make_csr("pump-1"))
    args = ["certs", "issue", "--group", "mqtt-device", "--owner", "pump-1", "--csr", str(csr),
            "--out", str(tmp_path / "p.pem")]
    bad = run(runner, d, *args, env={"OTPKI_HSM_PIN": "000000"})
    assert bad.exit_code == 2 and "PIN" in bad.output
    assert json.loads(run(runner, d, "certs", "list", "--json").stdout) == []
    good = run(runner, d, *args, env={"OTPKI_HSM_PIN": token.pin})
    assert good.exit_code == 0, good.output
