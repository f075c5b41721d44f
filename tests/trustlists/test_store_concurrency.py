"""Several otpki processes writing to one PostgreSQL store at once keep what one process guarantees on SQLite.

Real processes (tests/trustlists/store_race_worker.py) on a real PostgreSQL cluster, started together: each
issues, revokes (a CRL each time), re-signs every CRL and asks the shared request guard about one request id.
What must hold afterwards: serials unique; one audit chain that verifies, with every issuance in it; per CA,
CRL numbers 1..n without a gap or a repeat, and the newest CRL lists every revocation; per group, trust-list
versions 1..n; every revocation in a fresh instance's revocation index; the shared request admitted once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from cryptography import x509

from trustlists.testing import PostgresCluster, make_engine
from trustlists.testing import sql as raw_sql

from .store_race_worker import config

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 4
ROUNDS = 4
DEADLINE_S = 240.0


def test_concurrent_instances_keep_serials_crl_numbers_versions_and_the_audit_chain(
        postgres_cluster: PostgresCluster, tmp_path: Path) -> None:
    url = postgres_cluster.database()
    engine = make_engine(tmp_path, config=config(), store_url=url)
    engine.hierarchy.initialize(actor="tester")
    owners = [engine.registry.register(group="mqtt-device", name=f"pump-{n}", actor="tester") for n in range(WORKERS)]
    engine.close()

    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-m", "tests.trustlists.store_race_worker", url, str(tmp_path), o.id,
                               str(ROUNDS), str(go)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for o in owners]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
        go.touch()
        deadline = time.monotonic() + DEADLINE_S
        results = []
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert p.returncode == 0, err[-2000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [r["error"] for r in results] == [None] * WORKERS

    issued = [s for r in results for s in r["issued"]]
    revoked = [s for r in results for s in r["revoked"]]
    assert len(issued) == len(set(issued)) == WORKERS * ROUNDS
    assert sorted(v for r in results for v in r["guard"]).count("ok") == 1  # one admission, the rest replays

    engine = make_engine(tmp_path, config=config(), store_url=url)
    try:
        verified = engine.verify_audit()
        assert verified.ok, verified.problem
        assert sorted(r.subject for r in engine.audit_records(action="certificate.issue")
                      if r.subject in set(issued)) == sorted(issued)
        assert sorted(r.subject for r in engine.audit_records(action="certificate.revoke")) == sorted(revoked)
        for serial in revoked:
            assert engine.is_revoked("mqtt-device", int(serial, 16))
        with engine._ctx.store.read() as tx:
            crls = raw_sql(tx).execute("SELECT ca_id, crl_number, der FROM crls ORDER BY ca_id, crl_number").fetchall()
            versions = raw_sql(tx).execute("SELECT grp, version FROM trust_versions ORDER BY grp, version").fetchall()
        numbers: dict[str, list[int]] = defaultdict(list)
        for ca_id, number, der in crls:
            numbers[ca_id].append(number)
            parsed = x509.load_der_x509_crl(bytes(der))
            assert parsed.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == number
        for ca_id, seen in numbers.items():
            assert seen == list(range(1, len(seen) + 1)), ca_id
        assert len(numbers["mqtt-device"]) >= 1 + len(revoked) + WORKERS * ROUNDS  # init, revocations, refreshes
        newest = engine.latest_crl("mqtt-device")
        assert newest is not None
        listed = {format(e.serial_number, "x") for e in x509.load_der_x509_crl(newest.der)}
        assert set(revoked) <= listed
        by_group: dict[str, list[int]] = defaultdict(list)
        for group, version in versions:
            by_group[group].append(version)
        for group, seen in by_group.items():
            assert seen == list(range(1, len(seen) + 1)), group
    finally:
        engine.close()
