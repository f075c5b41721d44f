"""The benchmarks still run and print what they promise (quick sizes; no timing is asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmarks_run_and_report_json() -> None:
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "run_all.py"), "--quick"], capture_output=True,
                         text=True, timeout=600, check=False, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    reports = json.loads(res.stdout)
    assert {r["benchmark"] for r in reports} == {"issuance", "crl", "revocation_check", "inventory_expiring",
                                                 "gds_pull", "push_fleet", "mqtt_connect", "mqtt_revocation_mosquitto",
                                                 "cli_startup", "cli_certs_list", "pg_issuance",
                                                 "inventory_expiring_postgresql", "crl_postgresql", "batch_workers"}
    for r in reports:
        assert {"engine", "baseline", "ratio", "target", "meets_target", "params"} <= set(r)
        assert isinstance(r["meets_target"], bool) and r["ratio"] > 0
    issuance = next(r for r in reports if r["benchmark"] == "issuance")
    assert all(v["audit_chain_ok"] and v["same_extensions_as_raw"] for v in issuance["engine"].values())
    pg = next(r for r in reports if r["benchmark"] == "pg_issuance")
    assert pg["engine"]["audit_chain_ok"] and pg["baseline"]["sqlite_audit_chain_ok"]
    startup = next(r for r in reports if r["benchmark"] == "cli_startup")
    assert startup["engine"]["heavy_modules_imported_by_help"] == []
    listing = next(r for r in reports if r["benchmark"] == "cli_certs_list")
    assert listing["engine"]["rows_listed"] == listing["baseline"]["rows"] > 0
