"""`otpki certs list`: one plain line per certificate with whole values (a serial can be copied into `certs show`),
and JSON that is ASCII as json.dumps writes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from otpki.cli.main import app
from trustlists.testing import make_csr

PASS = "a long enough test passphrase"
NAME = "Pumpstation-Süd-[Nord]-Leitsystem-B"  # brackets are not markup; ü stays ü in the table


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    cfg = tmp_path / "in.toml"
    cfg.write_text('[pki.root]\nkey_type = "ec-p256"\n')
    res = CliRunner().invoke(app, ["-d", str(d), "init", "--config", str(cfg)], env={"OTPKI_CA_PASSPHRASE": PASS})
    assert res.exit_code == 0, res.output
    return d


def otpki(d: Path, *args: str) -> str:
    res = CliRunner().invoke(app, ["-d", str(d), *args], env={"OTPKI_CA_PASSPHRASE": PASS})
    assert res.exit_code == 0, res.output
    return res.stdout


def test_certs_list_prints_whole_values_one_line_per_certificate(data_dir: Path, tmp_path: Path) -> None:
    uri = "urn:plant:north:pumpstation-sued-nord-leitsystem-b"
    otpki(data_dir, "owners", "add", "opcua-application", NAME, "--uri", uri)
    otpki(data_dir, "owners", "add", "mqtt-device", "pump-7")
    csrs = {"app.csr": (make_csr(NAME, uris=[uri]), "opcua-application", NAME),
            "pump.csr": (make_csr("pump-7"), "mqtt-device", "pump-7")}
    for file, (csr, group, owner) in csrs.items():
        (tmp_path / file).write_bytes(csr)
        otpki(data_dir, "certs", "issue", "--group", group, "--owner", owner, "--csr", str(tmp_path / file),
              "--out", str(tmp_path / f"{file}.pem"))
    listed = json.loads(otpki(data_dir, "certs", "list", "--json"))
    otpki(data_dir, "certs", "revoke", listed[0]["serial"])
    listed = json.loads(otpki(data_dir, "certs", "list", "--json"))

    table = otpki(data_dir, "certs", "list").splitlines()
    assert table[0].split("  ")[0] == "serial" and table[-1] == "2 certificates" and len(table) == 4
    for rec in listed:
        line = next(x for x in table if x.startswith(rec["serial"] + " "))
        assert rec["subject"] in line and f" {rec['status']} " in line and rec["not_after"][:10] in line
    assert any(f"CN={NAME}" in x for x in table) and {r["status"] for r in listed} == {"active", "revoked"}

    raw = otpki(data_dir, "certs", "list", "--json")
    assert raw.isascii() and "S\\u00fcd" in raw and raw == json.dumps(listed, indent=2) + "\n"
