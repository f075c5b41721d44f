"""An approval and a rejection of the same request at the same moment, by two real processes: exactly one wins,
and the other is told plainly that the request was decided already (RequestAlreadyDecided), never that the store
was busy or deadlocked. On PostgreSQL (concurrent writers) and on SQLite (one writer at a time, a busy timeout).

The two workers (tests/multi/decide_worker.py) take the requests one by one and are let go together on each.
Before the fix the loser got whatever the moment gave: InvalidState "not pending", RequestRejected (an approval
that had signed when the rejection committed), InvalidState "can no longer be rejected".
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trustlists.requests import RequestStatus
from trustlists.testing import PostgresCluster, make_csr, make_engine

from .decide_config import config
from .instances import ROOT

ROUNDS = 20
DEADLINE_S = 240.0
LOSER = "RequestAlreadyDecided:request_already_decided:"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        yield cluster.database()


def _line(proc: subprocess.Popen[str], deadline: float) -> str:
    assert proc.stdout is not None
    text = proc.stdout.readline().strip()
    assert text, f"worker ended early: {proc.stderr.read() if proc.stderr else ''}"
    assert time.monotonic() < deadline, "the race did not finish in time"
    return text


def test_approve_and_reject_at_once_one_winner_and_a_clear_error(store_url: str | None, tmp_path: Path) -> None:
    engine = make_engine(tmp_path, config=config(), store_url=store_url)
    engine.hierarchy.initialize(actor="tester")
    alice = engine.registry.register(group="opcua-user", name="alice", actor="tester")
    # CSR requests: approving one issues it, which is final. (A new-key request approved and not yet collected may
    # still be rejected afterwards, by design: there both calls succeed, one after the other.)
    ids = [engine.requests.submit_csr(alice.id, make_csr("alice"), actor="alice").id for _ in range(ROUNDS)]
    engine.close()
    (tmp_path / "ids").write_text("\n".join(ids))
    go = tmp_path / "go"
    go.mkdir()

    procs = [subprocess.Popen([sys.executable, "-m", "tests.multi.decide_worker", str(tmp_path), store_url or "-",
                               action, str(tmp_path / "ids"), str(go)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for action in ("approve", "reject")]
    deadline = time.monotonic() + DEADLINE_S
    try:
        for n in range(ROUNDS):
            for p in procs:
                assert _line(p, deadline) == f"ready {n}"
            (go / str(n)).touch()
        approvals, rejections = (json.loads(_line(p, deadline)) for p in procs)
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    engine = make_engine(tmp_path, config=config(), store_url=store_url)
    try:
        for request_id, approved, rejected in zip(ids, approvals, rejections, strict=True):
            outcomes = sorted([approved, rejected])
            assert outcomes[-1] == "won" and outcomes[0].startswith(LOSER), (request_id, approved, rejected)
            status = engine.requests.get(request_id).status
            assert status is (RequestStatus.ISSUED if approved == "won" else RequestStatus.REJECTED)
            actions = [r.action for r in engine.audit_records() if r.subject == request_id]
            assert actions.count("request.approve") + actions.count("request.reject") == 1, actions
        verified = engine.verify_audit()
        assert verified.ok, verified.problem
    finally:
        engine.close()
    print(f"approve won {approvals.count('won')}, reject won {rejections.count('won')} of {ROUNDS}")
