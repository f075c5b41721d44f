"""Enrollment replay memory and rate limits hold across instances: real processes on one PostgreSQL store ask
the request guard at the same moment; one request id is admitted once in all, and one subject's budget is spent
once in all (not once per instance)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from trustlists.testing import PostgresCluster, make_engine

from .guard_worker import RATE_LIMIT, RATE_REQUESTS
from .instances import ROOT

WORKERS = 3
DEADLINE_S = 120.0


def test_one_replayed_request_admitted_once_and_one_rate_limit_for_all_instances(
        postgres_cluster: PostgresCluster, tmp_path: Path) -> None:
    url = postgres_cluster.database()
    make_engine(tmp_path, store_url=url).close()  # creates the schema before the workers race to
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-m", "tests.multi.guard_worker", url, str(tmp_path), f"instance-{n}",
                               str(go)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in range(WORKERS)]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
        go.touch()
        results = []
        for p in procs:
            out, err = p.communicate(timeout=DEADLINE_S)
            assert p.returncode == 0, err[-2000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert sorted(r["replay"] for r in results) == ["ok"] + ["replay"] * (WORKERS - 1)
    verdicts = [v for r in results for v in r["rate"]]
    assert len(verdicts) == WORKERS * RATE_REQUESTS
    assert verdicts.count("ok") == RATE_LIMIT.burst  # one bucket for every instance
    assert verdicts.count("rate_limited") == WORKERS * RATE_REQUESTS - RATE_LIMIT.burst
