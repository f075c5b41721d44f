"""PLC simulators in worker processes (`python -m simulators.plant`), for plants larger than one process holds.

Starting an asyncua server costs about a second of CPU, so a plant of hundreds of PLCs runs in several
processes that use every core. The demo and the fleet benchmark both start and stop their plants here.
Each worker runs in its own session so a Ctrl-C in the terminal reaches only the caller, which stops the
workers in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

PASSWORD_ENV = "OTPKI_PLC_ADMIN_PASSWORD"


def chunks(count: int, *, per_process: int, min_workers: int = 1) -> list[tuple[int, int]]:
    """(first index, size) per worker: at most per_process each, at least min_workers, as evenly as it divides."""
    if count <= 0:
        return []
    workers = max(min_workers, -(-count // per_process))
    per = -(-count // workers)
    return [(start, min(per, count - start)) for start in range(0, count, per)]


def start_workers(parts: list[tuple[int, int]], *, base_port: int, root: Path, password: str, admin: str,
                  host: str = "127.0.0.1", prefix: str = "plc", log_dir: Path | None = None,
                  ) -> list[subprocess.Popen[str]]:
    """One worker per part; PLC i is `{prefix}-{i+1}` on port base_port + i, whichever worker runs it."""
    env = {**os.environ, PASSWORD_ENV: password}
    # The workers run in the source tree (for `-m simulators.plant`): a relative root would land there.
    root = Path(os.path.abspath(root))
    workers: list[subprocess.Popen[str]] = []
    for start, n in parts:
        log = (log_dir / f"plant-{start + 1}.log").open("w") if log_dir is not None else subprocess.DEVNULL
        try:
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "simulators.plant", "--plcs", str(n), "--base-port", str(base_port + start),
                 "--root", str(root), "--prefix", prefix, "--first", str(start + 1), "--host", host,
                 "--admin", admin, "--password-env", PASSWORD_ENV],
                env=env, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True,
                cwd=Path(__file__).resolve().parents[1]))
        finally:
            if not isinstance(log, int):  # an open file, not subprocess.DEVNULL
                log.close()  # the child has its own descriptor
    return workers


async def wait_ready(workers: list[subprocess.Popen[str]], sizes: list[int],
                     on_started: Callable[[int], None] | None = None) -> None:
    """Wait for every worker's READY line; a worker that exits first is an error naming its exit status."""
    async def ready(worker: subprocess.Popen[str], n: int) -> None:
        assert worker.stdout is not None
        line = await asyncio.to_thread(worker.stdout.readline)
        if not line.startswith("READY"):
            raise RuntimeError(f"a PLC worker process did not start (exit status {worker.poll()})")
        if on_started is not None:
            on_started(n)

    await asyncio.gather(*(ready(w, n) for w, n in zip(workers, sizes, strict=True)))


def stop_workers(workers: list[subprocess.Popen[str]], grace_s: float = 5.0) -> None:
    """SIGTERM each worker's process group; whatever is still there after the grace period is killed.

    Everything a PLC was pushed is on disk before the push reports success, so a kill loses nothing.
    """
    for w in workers:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(w.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for w in workers:
        try:
            w.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(w.pid, signal.SIGKILL)
            w.wait(timeout=10)
        if w.stdout is not None:
            w.stdout.close()
