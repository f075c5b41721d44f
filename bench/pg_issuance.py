"""Issuance from CSRs on PostgreSQL, one process and two processes, against SQLite and raw `cryptography`.

engine (PostgreSQL): `engine.authority.issue_many`, 100 CSRs per commit (as bench/issuance.py), in worker processes
        that each open their own engine on one database of a throwaway cluster with durable commits (fsync,
        synchronous_commit, full_page_writes on). `one_process`: one worker; `two_processes`: two workers at once,
        each with its own CSRs, started together; throughput = certificates / (last end - first start).
baselines, same run: the same issue_many path on SQLite in this process (one writer: SQLite cannot take two),
        and raw `cryptography` (load + verify CSR, build, sign, DER; nothing stored) in this process.

Also reported: the cluster's CPU per certificate (`server_cpu_us_per_certificate`, best run): the server runs on the
same cores as the workers, so with two workers on two cores it bounds what the second one can add.

Target: two processes on PostgreSQL >= 1.6 x one process (the ratio).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography import x509

from bench._common import ACTOR, config_with, emit, note, parse_args, postgres_cluster, summary, timed, workdir
from bench.issuance import BATCH, GROUP, make_csrs, raw_issue
from trustlists import testing
from trustlists.authority import CsrIssueRequest
from trustlists.models import IssuedCertificate, KeyType

TARGET = 1.6
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
START_DEADLINE_S = 120.0


def config():  # type: ignore[no-untyped-def]
    return config_with(GROUP, KeyType.EC_P256)


def issue_all(engine: Any, owner_id: str, csrs: list[bytes]) -> int:
    done = 0
    for start in range(0, len(csrs), BATCH):
        chunk = [CsrIssueRequest(csr=c, owner_id=owner_id) for c in csrs[start:start + BATCH]]
        results = engine.authority.issue_many(chunk, actor=ACTOR)
        assert all(isinstance(r, IssuedCertificate) for r in results), results
        done += len(results)
    return done


def worker(url: str, directory: str, owner_id: str, csr_file: str, start_file: str) -> int:
    """One instance: open the engine, warm up, say ready, wait for the start file, issue, report its times."""
    csrs = [c.encode() for c in json.loads(Path(csr_file).read_text())]
    engine = testing.make_engine(Path(directory), config=config(), store_url=url, busy_timeout_s=60.0)
    try:
        issue_all(engine, owner_id, csrs[:5])  # warm-up: CA key, signer, pool connections
        print("ready", flush=True)
        deadline = time.monotonic() + START_DEADLINE_S
        while not Path(start_file).exists():
            if time.monotonic() > deadline:
                raise SystemExit("no start signal")
            time.sleep(0.001)
        t0 = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of the machine
        n = issue_all(engine, owner_id, csrs[5:])
        t1 = time.monotonic()
    finally:
        engine.close()
    print(json.dumps({"start": t0, "end": t1, "issued": n}), flush=True)
    return 0


def server_cpu_s(cluster: testing.PostgresCluster) -> float:
    """CPU seconds the cluster has used so far: its postmaster (with the backends it has reaped) and the live
    backends. It shares this machine's cores with the workers, so its CPU per certificate bounds what a second
    worker can add. Linux /proc."""
    assert cluster.base is not None
    postmaster = int((cluster.base / "data" / "postmaster.pid").read_text().split()[0])
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(entry.name) == postmaster:
            ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        elif int(fields[1]) == postmaster:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def run_workers(url: str, directory: Path, owner_id: str, csr_sets: list[list[bytes]], tag: str,
                cluster: testing.PostgresCluster) -> tuple[float, int, float]:
    """Seconds from the first worker's start to the last one's end, certificates issued, and the CPU seconds the
    cluster used from the start signal to the last report (the workers' start-up and warm-up are not in it)."""
    start_file = directory / f"start-{tag}"
    procs = []
    for i, csrs in enumerate(csr_sets):
        csr_file = directory / f"csrs-{tag}-{i}.json"
        csr_file.write_text(json.dumps([c.decode() for c in csrs]))
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--worker", url, str(directory), owner_id, str(csr_file), str(start_file)],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}))
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"worker did not start: {line!r}")
        cpu = server_cpu_s(cluster)
        start_file.touch()
        reports = []
        for p in procs:
            out, _ = p.communicate(timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"worker failed ({p.returncode})")
            reports.append(json.loads(out.strip().splitlines()[-1]))
        cpu = server_cpu_s(cluster) - cpu
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        start_file.unlink(missing_ok=True)
    return (max(r["end"] for r in reports) - min(r["start"] for r in reports)), sum(r["issued"] for r in reports), cpu


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.exit(worker(*sys.argv[2:7]))
    args = parse_args(__doc__ or "")
    n = 100 if args.quick else 1500  # per process
    reps = 1 if args.quick else 3
    note(f"pg_issuance: {n} CSRs per process x 3 sets, {reps} runs")
    sets = [make_csrs(n + 5) for _ in range(3)]
    with postgres_cluster(DURABLE) as cluster, workdir("pg-issuance") as d:
        url = cluster.database()
        engine = testing.make_engine(d / "pg", config=config(), store_url=url)
        engine.hierarchy.initialize(actor=ACTOR)
        owner = engine.registry.register(group=GROUP, name="scada1", application_uri="urn:plant:scada1",
                                         dns_names=["scada1"], actor=ACTOR)
        engine.close()
        lite = testing.make_engine(d / "sqlite", config=config())
        lite.hierarchy.initialize(actor=ACTOR)
        lite_owner = lite.registry.register(group=GROUP, name="scada1", application_uri="urn:plant:scada1",
                                            dns_names=["scada1"], actor=ACTOR)
        ca = lite.hierarchy.issuing_ca_for(GROUP, None)
        issuer_cert, issuer_key = testing.ca_signing_material(lite, ca)
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        lifetime = timedelta(days=lite.config.group(GROUP).leaf_lifetime_days)
        issue_all(lite, lite_owner.id, sets[0][:5])

        one_s: list[float] = []
        two_s: list[float] = []
        lite_s: list[float] = []
        raw_s: list[float] = []
        server_us: dict[str, list[float]] = {"one": [], "two": []}  # server CPU per certificate, per run
        for rep in range(reps):  # interleaved: every path sees the same machine noise
            note(f"pg_issuance: run {rep + 1}/{reps}")
            t, _ = timed(lambda: [raw_issue(c, issuer_cert, issuer_key, aki, lifetime) for c in sets[0][5:]])
            raw_s.append(t)
            t, issued = timed(lambda: issue_all(lite, lite_owner.id, sets[0][5:]))
            assert issued == n
            lite_s.append(t)
            t, issued, cpu = run_workers(url, d / "pg", owner.id, [sets[0]], f"one-{rep}", cluster)
            assert issued == n
            one_s.append(t)
            server_us["one"].append(cpu / issued * 1e6)
            t, issued, cpu = run_workers(url, d / "pg", owner.id, [sets[1], sets[2]], f"two-{rep}", cluster)
            assert issued == 2 * n
            two_s.append(t)
            server_us["two"].append(cpu / issued * 1e6)
        lite_audit = lite.verify_audit().ok
        lite.close()
        engine = testing.make_engine(d / "pg", config=config(), store_url=url)
        try:
            pg_audit = engine.verify_audit()
            stored = engine.inventory.count()
        finally:
            engine.close()
    one_rate, two_rate = n / min(one_s), 2 * n / min(two_s)
    ratio = two_rate / one_rate
    emit(
        benchmark="pg_issuance",
        engine={"postgresql_one_process_certs_per_s": round(one_rate, 1),
                "postgresql_two_processes_certs_per_s": round(two_rate, 1),
                "one_process_seconds": summary(one_s), "two_processes_seconds": summary(two_s),
                "audit_chain_ok": pg_audit.ok, "audit_records": pg_audit.records, "stored_certificates": stored,
                "server_cpu_us_per_certificate": {k: round(min(v), 1) for k, v in server_us.items()}},
        baseline={"sqlite_one_process_certs_per_s": round(n / min(lite_s), 1), "sqlite_seconds": summary(lite_s),
                  "sqlite_audit_chain_ok": lite_audit,
                  "raw_cryptography_one_core_certs_per_s": round(n / min(raw_s), 1), "raw_seconds": summary(raw_s)},
        ratio=ratio,
        target=f"two processes on PostgreSQL >= {TARGET} x one process (certificates per second, best runs)",
        meets_target=ratio >= TARGET,
        params={"certs_per_process": n, "runs": reps, "statistic": "best run", "profile": GROUP,
                "ca_key": "ec-p256", "leaf_key": "ec-p256 (CSRs made before timing)",
                "commit": f"issue_many, {BATCH} CSRs per commit, one hash-chained audit record per certificate",
                "postgresql": f"throwaway cluster on 127.0.0.1, {DURABLE}", "cores": os.cpu_count()},
    )


if __name__ == "__main__":
    main()
