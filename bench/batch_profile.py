"""Where a factory batch's time goes: `sign_directory` (what each `otpki batch sign` worker runs), stage by
stage, in CPU time (stable on a loaded machine, unlike wall time), beside the raw path and the command's start-up.

    PYTHONPATH=. .venv/bin/python bench/batch_profile.py [--quick]

Not a benchmark with a target (run_all does not run it): a profile to read next to bench/batch_workers.py.
Per certificate, microseconds of this thread's CPU time (time.thread_time) and of wall time (which adds the
waits: fsync, syncfs, the write lock, and other processes' turns on a loaded machine), one worker, one run:

    read + load + CN   reading the CSR file, parsing it, its common name (trustlists.batch._examine)
    csr signature      is_signature_valid, once per CSR
    owner + rules      the devices: one look-up per chunk, new_owner (naming rules), check_verified_csr
    registration       the chunk's new devices: one insert, their audit records, the transaction's commit
    key history        the inventory's answer for each key (reuse / refuse / sign)
    build, sign        leaf_builder; signing with the CA key (+ DER)
    record values      the CertificateRecord, hashes, audit details
    files              the chunk's files: PEM, temp files, renames
    file flush         the chunk's one syncfs (file data) and one directory fsync (the renames)
    commit             certificates + key index + audit records inserted, the durable COMMIT
    rest               everything else in sign_directory (listing, reports, Python glue)
raw: bench/batch_workers.py's baseline (read + load + verify + build + sign + DER) for the same CSRs.
pipeline: `--workers <cores>` (otpki.batch_pool) run from this process over the same CSRs: CPU per certificate
of the recording process and of all the workers together, user and system apart (getrusage), and wall time.
start-up: user + system CPU of `otpki batch sign` over an empty directory (--workers 1), as a child process.
The wrappers cost ~1 us per call.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography import x509

import trustlists.batch as batch
from bench._common import emit, note, parse_args, workdir
from bench.batch_workers import GROUP, otpki, raw_sign, use_bytecode_cache
from otpki.batch_pool import sign_in_processes
from otpki.config import load_settings
from otpki.runtime import open_engine
from trustlists.authority import CertificateAuthority
from trustlists.registry import Registry
from trustlists.testing import PASSPHRASE, ca_signing_material, make_csr

STAGES = ["read + load + CN", "csr signature", "owner + rules", "registration", "key history", "build", "sign",
          "record values", "files", "file flush", "commit", "rest"]


class Stages:
    """Exclusive CPU and wall time per stage: a stage entered inside another is taken out of the outer one."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self.wall: dict[str, float] = defaultdict(float)
        self._stack: list[list[float]] = []

    def wrap(self, owner: Any, name: str, stage: str) -> None:
        original: Callable[..., Any] = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            # start CPU, start wall, CPU and wall spent in inner stages
            frame = [time.thread_time(), time.perf_counter(), 0.0, 0.0]
            self._stack.append(frame)
            try:
                return original(*args, **kwargs)
            finally:
                self._stack.pop()
                cpu, wall = time.thread_time() - frame[0], time.perf_counter() - frame[1]
                self.cpu[stage] += cpu - frame[2]
                self.wall[stage] += wall - frame[3]
                if self._stack:
                    self._stack[-1][2] += cpu
                    self._stack[-1][3] += wall

        setattr(owner, name, timed)


def main() -> None:
    args = parse_args(__doc__ or "")
    n = 300 if args.quick else 3000
    with workdir("batch-profile") as d:
        note(f"batch_profile: data directory and {n} CSRs")
        use_bytecode_cache(d)
        template = d / "template"
        res = otpki(template, "init")
        assert res.returncode == 0, res.stderr
        in_dir = d / "csrs"
        in_dir.mkdir()
        for i in range(n):
            (in_dir / f"dev-{i:05d}.csr").write_bytes(make_csr(f"dev-{i:05d}"))
        empty = d / "empty"
        empty.mkdir()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        res = otpki(template, "batch", "sign", str(empty), str(d / "out-empty"), "--workers", "1", "--json")
        assert res.returncode == 0, res.stderr
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        startup_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

        os.environ["OTPKI_CA_PASSPHRASE"] = PASSPHRASE.decode()
        pipeline = _pipeline_split(template, d, in_dir, n)  # before this process opens any store (it forks)
        data_dir = d / "run"
        shutil.copytree(template, data_dir)
        engine = open_engine(load_settings(data_dir))
        try:
            ca = engine.hierarchy.issuing_ca_for(GROUP, None)
            issuer_cert, issuer_key = ca_signing_material(engine, ca)
            lifetime = timedelta(days=engine.config.group(GROUP).leaf_lifetime_days)
            ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
            files = sorted(in_dir.iterdir())
            start = time.thread_time()
            for f in files:
                raw_sign(f.read_bytes(), issuer_cert, issuer_key, aki, lifetime)
            raw_cpu = time.thread_time() - start

            stages = Stages()
            stages.wrap(batch, "_examine", "read + load + CN")
            stages.wrap(batch, "verify_csr_signature", "csr signature")
            stages.wrap(batch, "_owners_for", "owner + rules")
            stages.wrap(Registry, "register_many", "registration")
            stages.wrap(CertificateAuthority, "_settle_known_keys", "key history")
            stages.wrap(CertificateAuthority, "_draft", "build")
            stages.wrap(CertificateAuthority, "_sign", "sign")
            stages.wrap(CertificateAuthority, "_record", "record values")
            stages.wrap(batch, "_install_all", "files")
            stages.wrap(batch, "_flush_data", "file flush")
            stages.wrap(batch, "_sync_directory", "file flush")
            stages.wrap(CertificateAuthority, "_commit", "commit")
            stages.wrap(batch, "sign_directory", "rest")
            report = batch.sign_directory(engine, in_dir, d / "out", group=GROUP, actor="bench")
            assert report.issued == n, report.failed
        finally:
            engine.close()
    per_cert = {s: round(stages.cpu.get(s, 0.0) / n * 1e6, 1) for s in STAGES}
    wall_per_cert = {s: round(stages.wall.get(s, 0.0) / n * 1e6, 1) for s in STAGES}
    total = sum(stages.cpu.values())
    emit(
        benchmark="batch_profile",
        engine={"cpu_us_per_certificate": per_cert, "cpu_us_per_certificate_total": round(total / n * 1e6, 1),
                "wall_us_per_certificate": wall_per_cert,
                "wall_us_per_certificate_total": round(sum(stages.wall.values()) / n * 1e6, 1),
                "startup_cpu_seconds": round(startup_cpu, 3), "pipeline": pipeline},
        baseline={"raw_cpu_us_per_certificate": round(raw_cpu / n * 1e6, 1)},
        ratio=raw_cpu / total,
        target="none: a profile (engine CPU per certificate against raw)",
        meets_target=True,
        params={"csrs": n, "chunk": batch.CHUNK, "clock": "time.thread_time (this thread's CPU)",
                "loadavg_at_end": os.getloadavg()},
    )


def _pipeline_split(template: Path, d: Path, in_dir: Path, n: int) -> dict[str, object]:
    """`otpki batch sign --workers <cores>`'s work (otpki.batch_pool) run from here: CPU per certificate of the
    recording process (this one) and of the signing workers, user and system (kernel: file creation, reads,
    flushes) apart, and the wall time; no start-up in it."""
    cores = os.cpu_count() or 1
    data_dir = d / "run-pipeline"
    shutil.copytree(template, data_dir)
    settings = load_settings(data_dir)
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    report = sign_in_processes(settings, in_dir, d / "out-pipeline", group=GROUP, site=None, actor="bench",
                               workers=cores)
    wall = time.perf_counter() - start
    me2, children2 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    assert report.issued == n, report.failed

    def us(seconds: float) -> float:
        return round(seconds / n * 1e6, 1)

    return {"workers": cores, "wall_us_per_certificate": us(wall),
            "recorder_cpu_us_per_certificate": {"user": us(me2.ru_utime - me.ru_utime),
                                                "system": us(me2.ru_stime - me.ru_stime)},
            "workers_cpu_us_per_certificate": {"user": us(children2.ru_utime - children.ru_utime),
                                               "system": us(children2.ru_stime - children.ru_stime)}}


if __name__ == "__main__":
    main()
