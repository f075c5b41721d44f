"""`otpki batch sign --workers N`: N forked processes, each signing one share of the CSRs with its own engine.

Signing is CPU work and one Python process uses one core. The workers are forked from the command after its
imports (no second interpreter start-up, no re-import: what a worker costs is opening the store and the CA key),
and before any store is open in the parent (a SQLite connection must not cross a fork). Each worker owns whole
chunks of its share: it signs, registers, writes the files and commits them itself, so the commits of the
workers overlap with each other's signing; SQLite's write lock orders them and the audit chain stays one chain
(every append reads the head under that lock).

A worker dies with the command (PR_SET_PDEATHSIG on Linux): a batch killed with SIGKILL leaves no orphan
signing on; the next run completes what is missing, as for one process.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from otpki.config import Settings
from otpki.runtime import open_engine
from trustlists.batch import BatchReport, merge_reports, sign_directory

_PR_SET_PDEATHSIG = 1


def sign_in_processes(settings: Settings, in_dir: Path, out_dir: Path, *, group: str, site: str | None,
                      actor: str, workers: int, on_done: Callable[[int], None] | None = None) -> BatchReport:
    """The merged report of `workers` processes over the `workers` shares of `in_dir` (csr_files).

    A worker's error does not stop the others; a worker killed breaks the pool, which stops the others too
    (a crash like any other: what was committed is on disk). Then ValueError names the failed workers; running
    the batch again completes the rest."""
    reports: list[BatchReport] = []
    errors: list[str] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork"), initializer=_die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(_sign_share, settings, in_dir, out_dir, group, site, actor, (i, workers))
                   for i in range(workers)]
        for i, future in enumerate(futures):
            try:
                reports.append(BatchReport.model_validate_json(future.result()))
            except Exception as exc:  # a worker's failure, reported with the others'
                errors.append(f"worker {i + 1}: {exc}" if str(exc) else f"worker {i + 1}: {type(exc).__name__}")
            if on_done is not None:
                on_done(i)
    if errors:
        raise ValueError("; ".join(errors) + " (run the batch again: it completes what is missing)")
    return merge_reports(group, reports)


def _sign_share(settings: Settings, in_dir: Path, out_dir: Path, group: str, site: str | None, actor: str,
                shard: tuple[int, int]) -> str:
    engine = open_engine(settings)
    try:
        report = sign_directory(engine, in_dir, out_dir, group=group, site=site, actor=actor, shard=shard)
    finally:
        engine.close()
    return report.model_dump_json()  # a str crosses the pipe faster than the pickled models


def _die_with_parent(parent: int) -> None:
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
