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
