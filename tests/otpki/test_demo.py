"""`otpki demo` end to end, small: every step's check holds, the report adds up, the data dir stays inspectable.
The same demo on a real Mosquitto is in test_demo_mosquitto.py, on PostgreSQL in test_demo_postgresql.py (files of
their own: each demo takes a while, and the test workers run files in parallel)."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest
import typer
from cryptography import x509
from typer.testing import CliRunner

from tests.otpki.demo_cli import OTPKI, demo_env, otpki


def test_demo_small_plant_report_and_inspection(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    res = otpki("-d", str(data), "demo", "--json", "--plcs", "2", "--scada", "1", "--devices", "3")
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert report["ok"] and report["data_dir"] == str(data) and report["broker"] == "embedded"
    steps = report["steps"]
    assert [s["number"] for s in steps] == list(range(1, 9))
    assert all(s["ok"] for s in steps), [s for s in steps if not s["ok"]]
    assert all(s["seconds"] >= 0 and s["detail"] for s in steps)
    assert all(f"{s['number']}. {s['name']}" in report["phase_seconds"] for s in steps)

    counts = report["counts"]
    assert (counts["plcs"], counts["scada"], counts["devices"]) == (2, 1, 3)
    assert counts["cas"] >= 1 + 4  # root + an issuing CA per certificate group
    assert counts["certificates_revoked"] == 3  # scada-1, one device and the EST HMI
    assert counts["certificates_superseded"] == 3  # the renewed device, the re-pushed PLC, the re-enrolled HMI
    # issued = active + revoked + superseded (nothing expired, nothing left undelivered in a passing run)
    assert counts["certificates_issued"] == (counts["certificates_active"] + counts["certificates_revoked"]
                                             + counts["certificates_superseded"])
    assert counts["telemetry_messages"] >= 3

    rows = {e["kind"]: e for e in report["endpoints"]}
    assert rows["PLCs"]["total"] == 2 and rows["PLCs"]["renewed"] == 1 and rows["PLCs"]["factory"] == 0
    assert rows["SCADA"]["revoked"] == 1 and rows["SCADA"]["refused"] == 1
    assert rows["devices"]["revoked"] == 1 and rows["devices"]["refused"] == 1 and rows["devices"]["renewed"] == 1
    revocation = steps[5]["detail"]
    assert "GetRejectedList" in revocation and "reconnect refused" in revocation

    # The data directory stays, and the ordinary commands read it (listing needs no CA passphrase).
    listed = otpki("-d", str(data), "certs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    certs = json.loads(listed.stdout)
    assert len(certs) == counts["certificates_issued"]
    shown = otpki("-d", str(data), "trustlist", "show", "opcua-application")
    assert shown.returncode == 0, shown.stderr
    assert "opcua-application" in shown.stdout

    # It ends by saying how to open the plant in the console: a login, `otpki serve` on the demo data with the
    # passphrase file, the URL, and the root a browser trusts (written already).
    hint = report["console"]
    assert hint["url"] == "https://127.0.0.1:8443/"
    command = shlex.split(hint["command"])
    assert command == [f"OTPKI_CA_PASSPHRASE_FILE={data / 'demo-passphrase'}", "otpki", "-d", str(data), "serve",
                       "--listen", "127.0.0.1:8443"]
    root = x509.load_pem_x509_certificate(Path(hint["root_ca"]).read_bytes())
    assert Path(hint["root_ca"]) == data / "web" / "root-ca.pem" and root.issuer == root.subject
    assert shlex.split(hint["add_user"])[1:] == ["-d", str(data), "users", "add", "admin", "--role", "ca-admin"]
    added = subprocess.run([str(OTPKI), *shlex.split(hint["add_user"])[1:], "--json"], input="demo console pw 1\n",
                           capture_output=True, text=True, check=False, env=demo_env(), timeout=60)
    assert added.returncode == 0 and json.loads(added.stdout)["role"] == "ca-admin", added.stderr


def test_demo_never_wipes_a_foreign_directory(tmp_path: Path) -> None:
    data = tmp_path / "precious"
    data.mkdir()
    (data / "keep.txt").write_text("not the demo's")
    res = otpki("-d", str(data), "demo", "--json", "--plcs", "1", "--scada", "0", "--devices", "0")
    assert res.returncode == 2 and "not made by `otpki demo`" in res.stderr
    assert (data / "keep.txt").read_text() == "not the demo's" and sorted(p.name for p in data.iterdir()) == [
        "keep.txt"]


def test_demo_mosquitto_missing_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import otpki.demo
    from otpki.cli.demo import demo
    from otpki.cli.main import main

    assert otpki.demo.mosquitto_binary(search_path=str(tmp_path)) is None  # nothing installed there
    monkeypatch.setattr(otpki.demo, "mosquitto_binary", lambda: None)
    app = typer.Typer()
    app.callback()(main)
    app.command("demo")(demo)
    res = CliRunner().invoke(app, ["-d", str(tmp_path / "d"), "demo", "--json", "--broker", "mosquitto"])
    assert res.exit_code == 2 and "apt install mosquitto" in res.output
    assert not (tmp_path / "d").exists()
