"""The benchmarks still run and print what they promise (quick sizes; no timing is asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

from bench._common import SHARED_POSTGRES_ENV
from trustlists.testing import PostgresCluster

ROOT = Path(__file__).resolve().parents[1]
# Every benchmark, the longest first (so the two lanes below end close together).
BENCHMARKS = ["push_fleet", "gds_pull", "cli_startup", "cli_certs_list", "mqtt_connect", "issuance",
              "revocation_check", "mqtt_revocation_mosquitto", "crl", "inventory_expiring",
              "revocation_across_instances", "pg_issuance", "inventory_expiring_postgresql", "crl_postgresql",
              "batch_workers", "ocsp", "console", "est_enroll"]


# The benchmarks of the PostgreSQL store (each makes one database).
PG_BENCHMARKS = {"revocation_across_instances", "pg_issuance", "inventory_expiring_postgresql", "crl_postgresql"}


def databases(cluster: PostgresCluster) -> set[str]:
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate")}


def run_all(name: str, env: dict[str, str]) -> list[dict[str, Any]]:
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "run_all.py"), "--quick", "--only", name],
                         capture_output=True, text=True, timeout=600, check=False, cwd=ROOT, env=env)
    assert res.returncode == 0, f"{name}: {res.stderr[-2000:]}"
    reports: list[dict[str, Any]] = json.loads(res.stdout)
    return reports


def test_benchmarks_run_and_report_json(postgres_cluster: PostgresCluster) -> None:
    # The PostgreSQL benchmarks share the tests' cluster instead of each starting one: this run checks that they
    # work, and their figures are not read here.
    env = {**os.environ, SHARED_POSTGRES_ENV: postgres_cluster.url()}
    before = databases(postgres_cluster)
    # Two at a time, one per core: this checks that they run and what they report, and times nothing.
    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = [report for reports in pool.map(lambda name: run_all(name, env), BENCHMARKS)
                   for report in reports]
    # Each PostgreSQL benchmark made its database on the shared cluster (it started none of its own) and says so.
    made = databases(postgres_cluster) - before
    assert len(made) == len(PG_BENCHMARKS) and all(name.startswith("otpki_") for name in made), made
    for r in reports:
        assert ("postgresql" in r["params"]["environment"]) == (r["benchmark"] in PG_BENCHMARKS), r["benchmark"]
    assert {r["benchmark"] for r in reports} == {"issuance", "crl", "revocation_check", "inventory_expiring",
                                                 "gds_pull", "push_fleet", "mqtt_connect", "mqtt_revocation_mosquitto",
                                                 "cli_startup", "cli_certs_list", "revocation_across_instances",
                                                 "pg_issuance",
                                                 "inventory_expiring_postgresql", "crl_postgresql", "batch_workers",
                                                 "ocsp", "console", "est_enroll"}
    assert len(reports) == len(BENCHMARKS)
    for r in reports:
        assert {"engine", "baseline", "ratio", "target", "meets_target", "params"} <= set(r)
        assert isinstance(r["meets_target"], bool) and r["ratio"] > 0
    issuance = next(r for r in reports if r["benchmark"] == "issuance")
    assert all(v["audit_chain_ok"] and v["same_extensions_as_raw"] for v in issuance["engine"].values())
    pg = next(r for r in reports if r["benchmark"] == "pg_issuance")
    assert pg["engine"]["audit_chain_ok"] and pg["baseline"]["sqlite_audit_chain_ok"]
    startup = next(r for r in reports if r["benchmark"] == "cli_startup")
    assert startup["engine"]["heavy_modules_imported_by_help"] == []
    ocsp = next(r for r in reports if r["benchmark"] == "ocsp")
    assert ocsp["engine"]["uncached_responses_per_s"] > 0 and ocsp["engine"]["cached_responses_per_s"] > 0
    est = next(r for r in reports if r["benchmark"] == "est_enroll")
    assert est["engine"]["devices_enrolled"] == est["params"]["enrollments"] > 0  # every round trip enrolled one
    listing = next(r for r in reports if r["benchmark"] == "cli_certs_list")
    assert listing["engine"]["rows_listed"] == listing["baseline"]["rows"] > 0
