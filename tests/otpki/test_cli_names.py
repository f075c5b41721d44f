"""Bad and reserved names on the command line: one line on stderr, exit code 2, nothing stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from otpki.cli.main import app
from trustlists.testing import make_csr, make_subject_csr

PASS = "a long enough test passphrase"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, runner: CliRunner) -> Path:
    d = tmp_path / "pki"
    cfg = tmp_path / "in.toml"
    # A renamed enrollment service and admin user: what otpki.toml says is what is reserved.
    cfg.write_text('[pki.root]\nkey_type = "ec-p384"\n'
                   '[mqtt]\nservice_name = "plant-enroll"\n[mqtt.mosquitto]\nadmin_username = "broker-root"\n')
    result = runner.invoke(app, ["-d", str(d), "init", "--config", str(cfg)], env={"OTPKI_CA_PASSPHRASE": PASS})
    assert result.exit_code == 0, result.output
    return d


def run(runner: CliRunner, d: Path, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["-d", str(d), *args], env={"OTPKI_CA_PASSPHRASE": PASS})


def owners(runner: CliRunner, d: Path) -> list[dict[str, object]]:
    res = run(runner, d, "owners", "list", "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def one_line_error(res, needle: str) -> None:  # type: ignore[no-untyped-def]
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.output
    assert "Traceback" not in res.output


def test_owners_add_refuses_bad_and_reserved_names(runner: CliRunner, data_dir: Path) -> None:
    cases = [
        (["mqtt-device", "p" * 65], "at most 64"),
        (["mqtt-device", "pump+7"], "U+002B"),
        (["mqtt-device", "pump/7"], "U+002F"),
        (["mqtt-device", "pump#"], "U+0023"),
        (["mqtt-device", "pump\u202e7"], "U+202E"),
        (["mqtt-device", " pump-7"], "leading or trailing white space"),
        (["opcua-application", "SCADA", "--uri", "urn:plant:scada 1"], "is not a URI"),
        (["opcua-application", "SCADA", "--uri", "urn:plant:scada", "--dns", "scada_1.plant"], "not a host name"),
        (["opcua-application", "SCADA", "--uri", "urn:plant:scada", "--ip", "10.0.0.256"], "not an IP address"),
        (["mqtt-device", "plant-enroll"], "reserved for the MQTT enrollment service"),  # a plain device
        (["opcua-application", "broker-root", "--uri", "urn:plant:x"], "dynsec admin"),
        (["mqtt-device", "BROKER-ROOT"], "dynsec admin"),
        (["mqtt-device", "broker-127.0.0.1"], "embedded MQTT broker"),  # only in [mqtt] broker_group
        (["mqtt-device", "mosquitto-127.0.0.1"], "Mosquitto broker"),
    ]
    before = owners(runner, data_dir)
    for args, needle in cases:
        one_line_error(run(runner, data_dir, "owners", "add", *args), needle)
    assert owners(runner, data_dir) == before
    # The defaults are free again once renamed: nothing reserves them now.
    assert run(runner, data_dir, "owners", "add", "mqtt-device", "otpki-enrollment").exit_code == 0


def test_owners_add_stores_a_u_label_as_its_a_label(runner: CliRunner, data_dir: Path) -> None:
    res = run(runner, data_dir, "owners", "add", "opcua-application", "Prüfstand", "--uri", "urn:plant:pruef",
              "--dns", "Prüfstand.Werk.example")
    assert res.exit_code == 0, res.output
    (listed,) = [o for o in owners(runner, data_dir) if o["name"] == "Prüfstand"]
    assert listed["dns_names"] == ["xn--prfstand-75a.werk.example"]


def test_certs_issue_and_batch_refuse_bad_subjects(runner: CliRunner, data_dir: Path, tmp_path: Path) -> None:
    assert run(runner, data_dir, "owners", "add", "opcua-application", "scada-1", "--uri", "urn:plant:scada-1")\
        .exit_code == 0
    cases = [
        (make_subject_csr([(NameOID.COMMON_NAME, "S" * 65)], uris=["urn:plant:scada-1"]), "at most 64"),
        (make_subject_csr([(NameOID.COMMON_NAME, "scada-1"), (NameOID.ORGANIZATION_NAME, "O" * 65)],
                          uris=["urn:plant:scada-1"]), "subject O is 65 characters"),
        (make_subject_csr([(NameOID.COMMON_NAME, "broker-root")], uris=["urn:plant:scada-1"]), "dynsec admin"),
    ]
    for i, (csr, needle) in enumerate(cases):
        path = tmp_path / f"bad-{i}.csr"
        path.write_bytes(csr)
        one_line_error(run(runner, data_dir, "certs", "issue", "--group", "opcua-application", "--owner", "scada-1",
                           "--csr", str(path)), needle)
    listed = run(runner, data_dir, "certs", "list", "--json")
    assert json.loads(listed.stdout) == []
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "admin.csr").write_bytes(make_csr("broker-root"))
    (tmp_path / "in" / "wild.csr").write_bytes(make_csr("line+3"))
    res = run(runner, data_dir, "batch", "sign", str(tmp_path / "in"), str(tmp_path / "out"), "--json")
    assert res.exit_code == 1  # refusals are listed and reported in the exit code
    report = json.loads(res.stdout)
    assert {i["file"]: i["reason"] for i in report["items"]} == {"admin.csr": "name_reserved",
                                                                 "wild.csr": "name_forbidden_character"}
    assert json.loads(run(runner, data_dir, "certs", "list", "--json").stdout) == []


def test_the_console_script_prints_one_escaped_line(data_dir: Path) -> None:
    exe = Path(sys.executable).parent / "otpki"
    env = {**os.environ, "OTPKI_CA_PASSPHRASE": PASS, "COLUMNS": "80"}
    for name, needle in (("evil\u202egnp.exe", "\\u202e"), ("plant-enroll", "reserved")):
        res = subprocess.run([str(exe), "-d", str(data_dir), "owners", "add", "mqtt-device", name],
                             capture_output=True, text=True, check=False, env=env, timeout=60)
        assert res.returncode == 2, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and needle in res.stderr, res.stderr
        assert "\u202e" not in res.stderr and res.stdout == ""
