"""Where an issuance's time goes: bench/issuance.py's batched engine path, stage by stage, beside the raw path.

    PYTHONPATH=. .venv/bin/python bench/issuance_profile.py [--quick]

Not a benchmark with a target (run_all does not run it): a profile to read next to bench/issuance.py's ratio.
Per certificate, in microseconds of thread CPU time and of wall time, summed over the runs:

engine (trustlists.testing.issuance_stages; exclusive stages, they add up to the whole `issue_many`):
    csr load, csr signature (is_signature_valid), csr rules (every other check of trustlists.csr_checks),
    build (trustlists.certificate_builder.leaf_fields and the issuer's template, trustlists.leaf_encoding:
    the TBSCertificate), sign, record values (serial, the key's SubjectPublicKeyInfo, hashes, the
    CertificateRecord, audit details), sql insert (certificates + key index), audit (hash chain + insert),
    transaction + commit (BEGIN, the durable COMMIT of 100 certificates and what else the transaction does),
    issue_many rest.
raw (bench/issuance.py's baseline, timed in the same pieces): csr load, csr signature, build + sign + DER (which
    includes reading the CSR's key, subject and SAN: the engine does that among its csr rules).

The wrappers cost 1-2 us per stage call (~5 us per certificate), so the engine's total here is above the
benchmark's; the engine and the raw path take turns, as in the benchmark.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bench._common import ACTOR, config_with, emit, make_engine, note, parse_args, workdir
from bench.issuance import BATCH, GROUP, make_csrs, prepare, raw_issue
from trustlists.authority import CsrIssueRequest
from trustlists.models import KeyType
from trustlists.testing import StageTimes, issuance_stages


def exclusive(t: StageTimes, which: dict[str, float]) -> dict[str, float]:
    """The inclusive stage sums of `which` (t.cpu or t.wall) turned into stages that add up to issue_many."""
    get = which.get
    return {
        "csr load": get("csr load", 0.0),
        "csr signature": get("csr signature", 0.0),
        "csr rules": get("csr rules", 0.0),
        "build": get("build", 0.0),
        "sign": get("sign", 0.0),
        "record values": get("record values", 0.0) + get("draft", 0.0) - get("build", 0.0),
        "sql insert": get("sql insert", 0.0),
        "audit": get("audit", 0.0),
        "transaction + commit": get("record", 0.0) - get("sql insert", 0.0) - get("audit", 0.0),
        "issue_many rest": get("issue_many", 0.0) - sum(get(s, 0.0) for s in
                                                       ("csr load", "csr signature", "csr rules", "draft",
                                                        "sign", "record values", "record")),
        "total": get("issue_many", 0.0),
    }


def profile(ca_key_type: KeyType, n: int, reps: int) -> dict[str, dict[str, dict[str, float]]]:
    csrs = make_csrs(n)
    with workdir(f"issuance-profile-{ca_key_type.value}") as d:
        engine = make_engine(d, config_with(GROUP, ca_key_type))
        try:
            owner, _ca, issuer_cert, issuer_key, aki, lifetime = prepare(engine)

            def engine_batch() -> None:
                for start in range(0, n, BATCH):
                    engine.authority.issue_many([CsrIssueRequest(csr=c, owner_id=owner.id)
                                                 for c in csrs[start:start + BATCH]], actor=ACTOR)

            raw = StageTimes()

            def raw_batch() -> None:
                for data in csrs:
                    cpu, wall = time.thread_time(), time.perf_counter()
                    csr = x509.load_pem_x509_csr(data)
                    cpu2, wall2 = time.thread_time(), time.perf_counter()
                    raw.add("csr load", cpu2 - cpu, wall2 - wall)
                    assert csr.is_signature_valid
                    cpu3, wall3 = time.thread_time(), time.perf_counter()
                    raw.add("csr signature", cpu3 - cpu2, wall3 - wall2)
                    # raw_issue loads and verifies again (~1/3 of its time): subtracted below.
                    raw_issue(data, issuer_cert, issuer_key, aki, lifetime)[0].public_bytes(serialization.Encoding.DER)
                    raw.add("whole raw path", time.thread_time() - cpu3, time.perf_counter() - wall3)

            engine_batch()  # warm-up: caches, SQLite pages, code paths
            with issuance_stages() as stages:
                for _ in range(reps):
                    raw_batch()
                    engine_batch()
        finally:
            engine.close()
    per = 1e6 / (n * reps)

    def raw_stages(which: dict[str, float]) -> dict[str, float]:
        load, signature, whole = which["csr load"], which["csr signature"], which["whole raw path"]
        return {"csr load": load, "csr signature": signature, "build + sign + DER": whole - load - signature,
                "total": whole}

    return {
        "engine_us_per_certificate": {
            "cpu": {k: round(v * per, 1) for k, v in exclusive(stages, stages.cpu).items()},
            "wall": {k: round(v * per, 1) for k, v in exclusive(stages, stages.wall).items()}},
        "raw_us_per_certificate": {
            "cpu": {k: round(v * per, 1) for k, v in raw_stages(raw.cpu).items()},
            "wall": {k: round(v * per, 1) for k, v in raw_stages(raw.wall).items()}},
    }


def main() -> None:
    args = parse_args(__doc__ or "")
    sizes = {KeyType.EC_P256: 200, KeyType.RSA2048: 100} if args.quick else {KeyType.EC_P256: 1500,
                                                                           KeyType.RSA2048: 500}
    reps = 1 if args.quick else 3
    results = {}
    for key_type, n in sizes.items():
        note(f"issuance profile: {key_type.value} CA, {n} CSRs x {reps} runs")
        results[key_type.value] = profile(key_type, n, reps)
    p256 = results[KeyType.EC_P256.value]
    emit(benchmark="issuance_profile", engine={k: v["engine_us_per_certificate"] for k, v in results.items()},
         baseline={k: v["raw_us_per_certificate"] for k, v in results.items()},
         ratio=p256["raw_us_per_certificate"]["wall"]["total"] / p256["engine_us_per_certificate"]["wall"]["total"],
         target="none: a profile (ratio: raw/engine wall time per certificate, P-256 CA, with the profiler's cost)",
         meets_target=True,
         params={"certs_per_run": {k.value: n for k, n in sizes.items()}, "runs": reps, "batch": BATCH,
                 "statistic": "sum over the runs / certificates"})


if __name__ == "__main__":
    main()
