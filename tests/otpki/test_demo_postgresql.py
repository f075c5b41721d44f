"""`otpki demo` on a PostgreSQL store: the plant lives in the database, and a database that holds one is refused."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from tests.otpki.demo_cli import demo_env, otpki
from trustlists.testing import PostgresCluster


def test_demo_on_postgresql(tmp_path: Path, postgres_cluster: PostgresCluster) -> None:
    url = postgres_cluster.database()
    data = tmp_path / "demo"
    res = otpki("-d", str(data), "demo", "--json", "--store", url, "--plcs", "2", "--scada", "1", "--devices", "3")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-5000:]
    report = json.loads(res.stdout)
    assert report["ok"] and all(s["ok"] for s in report["steps"]), [s for s in report["steps"] if not s["ok"]]
    counts = report["counts"]
    assert counts["certificates_revoked"] == 3 and counts["certificates_superseded"] == 3  # as the SQLite demo
    assert not (data / "otpki.db").exists()  # the plant is in the database

    # The data directory's otpki.toml names the database: the ordinary commands read the plant from it.
    listed = otpki("-d", str(data), "certs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == counts["certificates_issued"]
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM certificates").fetchone() == (counts["certificates_issued"],)
    verified = otpki("-d", str(data), "audit", "verify", env=demo_env(OTPKI_CA_PASSPHRASE_FILE=str(
        data / "demo-passphrase")))
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # A database that holds a plant is never written over: one line, exit 2, nothing touched.
    again = otpki("-d", str(tmp_path / "demo2"), "demo", "--json", "--store", url, "--plcs", "1", "--scada", "0",
                   "--devices", "0")
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "not empty" in again.stderr, again.stderr
    assert not (tmp_path / "demo2").exists()
