"""The CLI on a PostgreSQL store (OTPKI_STORE_URL or [store] url): the same commands, real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from trustlists.testing import PASSPHRASE, PostgresCluster, make_csr


def otpki(data_dir: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "OTPKI_DATA_DIR": str(data_dir), "OTPKI_CA_PASSPHRASE": PASSPHRASE.decode(), **env}
    return subprocess.run([sys.executable, "-m", "otpki.cli.main", *args], env=full, capture_output=True, text=True,
                          timeout=180, check=False)


def test_the_cli_runs_a_plant_on_postgresql(postgres_cluster: PostgresCluster, tmp_path: Path) -> None:
    url = postgres_cluster.database()
    env = {"OTPKI_STORE_URL": url}
    data_dir = tmp_path / "pki"
    res = otpki(data_dir, "init", env=env)
    assert res.returncode == 0, res.stderr
    assert not (data_dir / "otpki.db").exists()  # the store is the database, not a file here
    assert otpki(data_dir, "db", "status", env=env).returncode == 0
    assert otpki(data_dir, "owners", "add", "mqtt-device", "pump-7", env=env).returncode == 0
    csr = tmp_path / "pump.csr"
    csr.write_bytes(make_csr("pump-7"))
    res = otpki(data_dir, "certs", "issue", "--group", "mqtt-device", "--owner", "pump-7", "--csr", str(csr),
                "--out", str(tmp_path / "pump.pem"), env=env)
    assert res.returncode == 0, res.stderr
    listed = json.loads(otpki(data_dir, "certs", "list", "--json", env=env).stdout)
    assert [c["status"] for c in listed] == ["active"]
    assert otpki(data_dir, "certs", "revoke", listed[0]["serial"], "--reason", "key-compromise",
                 env=env).returncode == 0
    verified = otpki(data_dir, "audit", "verify", env=env)
    assert verified.returncode == 0 and "intact" in verified.stdout
    # The same database named in otpki.toml instead of the environment.
    (data_dir / "otpki.toml").write_text((data_dir / "otpki.toml").read_text() + f'\n[store]\nurl = "{url}"\n')
    again = json.loads(otpki(data_dir, "certs", "list", "--json", env={}).stdout)
    assert [c["status"] for c in again] == ["revoked"]


def test_a_bad_store_url_is_one_line_and_exit_2(tmp_path: Path, postgres_cluster: PostgresCluster) -> None:
    data_dir = tmp_path / "pki"
    for url, expected in (("mysql://db/otpki", "must start with sqlite:///"),
                          (f"postgresql://postgres@127.0.0.1:{postgres_cluster.port}/no_such_db", "cannot")):
        res = otpki(data_dir, "init", env={"OTPKI_STORE_URL": url})
        assert res.returncode == 2, (url, res.stdout, res.stderr)
        assert res.stderr.count("\n") == 1 and expected in res.stderr, res.stderr


def test_db_copy_moves_a_cli_plant_to_postgresql_where_the_cli_keeps_working(
        postgres_cluster: PostgresCluster, tmp_path: Path) -> None:
    data_dir = tmp_path / "pki"
    assert otpki(data_dir, "init", env={}).returncode == 0
    for name in ("pump-7", "pump-8"):
        assert otpki(data_dir, "owners", "add", "mqtt-device", name, env={}).returncode == 0
        csr = tmp_path / f"{name}.csr"
        csr.write_bytes(make_csr(name))
        res = otpki(data_dir, "certs", "issue", "--group", "mqtt-device", "--owner", name, "--csr", str(csr),
                    "--out", str(tmp_path / f"{name}.pem"), env={})
        assert res.returncode == 0, res.stderr
    serials = [c["serial"] for c in json.loads(otpki(data_dir, "certs", "list", "--json", env={}).stdout)]
    assert otpki(data_dir, "certs", "revoke", serials[0], "--reason", "key-compromise", env={}).returncode == 0
    before = otpki(data_dir, "audit", "verify", env={}).stdout

    url = postgres_cluster.database()
    copied = otpki(data_dir, "db", "copy", "--to", url, "--json", env={"OTPKI_ACTOR": "migrator"})
    assert copied.returncode == 0, copied.stderr
    result = json.loads(copied.stdout)
    rows = {t["table"]: t["rows"] for t in result["tables"]}
    assert rows["certificates"] == 2 and rows["revocations"] == 1 and rows["crls"] >= 1
    assert result["audit_seq"] == result["audit_records"] + 1
    assert otpki(data_dir, "audit", "verify", env={}).stdout == before  # the source is left as it was

    # Again into the same database: refused in one line, exit 2.
    again = otpki(data_dir, "db", "copy", "--to", url, env={})
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "not empty" in again.stderr, again.stderr

    env = {"OTPKI_STORE_URL": url}
    assert [c["serial"] for c in json.loads(otpki(data_dir, "certs", "list", "--json", env=env).stdout)] == serials
    csr = tmp_path / "pump-9.csr"
    csr.write_bytes(make_csr("pump-9"))
    assert otpki(data_dir, "owners", "add", "mqtt-device", "pump-9", env=env).returncode == 0
    res = otpki(data_dir, "certs", "issue", "--group", "mqtt-device", "--owner", "pump-9", "--csr", str(csr),
                "--out", str(tmp_path / "pump-9.pem"), env=env)
    assert res.returncode == 0, res.stderr
    listed = json.loads(otpki(data_dir, "certs", "list", "--json", env=env).stdout)
    new = [c["serial"] for c in listed if c["serial"] not in serials]
    assert len(new) == 1
    assert otpki(data_dir, "certs", "revoke", new[0], "--reason", "superseded", env=env).returncode == 0
    assert otpki(data_dir, "crl", "refresh", "--force", env=env).returncode == 0
    verified = otpki(data_dir, "audit", "verify", env=env)
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stdout + verified.stderr
    log = json.loads(otpki(data_dir, "audit", "log", "--json", "--last", "1000", env=env).stdout)
    assert [r["actor"] for r in log if r["action"] == "store.copy"] == ["migrator"]
