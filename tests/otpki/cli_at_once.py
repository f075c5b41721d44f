"""Several `otpki` commands started at the same moment as real processes: the race tests' one way to run them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from trustlists.testing import PASSPHRASE

ROOT = Path(__file__).resolve().parents[2]


def otpki_env(data_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with the data directory and the tests' CA passphrase (then `extra`)."""
    return {**os.environ, "OTPKI_DATA_DIR": str(data_dir), "OTPKI_CA_PASSPHRASE": PASSPHRASE.decode(),
            **(extra or {})}


def at_once(*runs: tuple[Mapping[str, str], Sequence[str]], timeout: float = 180) -> list[tuple[int, str]]:
    """Start `otpki ARGS` for every (environment, ARGS) of `runs` before waiting on any, then wait for all: each
    one's exit status and stderr, in the order given. Whatever is still running when this returns or raises (a
    timeout) is killed, so no process outlives the test."""
    procs: list[subprocess.Popen[str]] = []
    results: list[tuple[int, str]] = []
    try:
        for env, args in runs:
            procs.append(subprocess.Popen([sys.executable, "-m", "otpki.cli.main", *args], env=dict(env), cwd=ROOT,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for p in procs:
            _, err = p.communicate(timeout=timeout)
            results.append((p.returncode, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results
