"""`otpki batch sign` that SIGKILLs itself at an exact point: how the batch tests cut a run short.

    python -m tests.otpki.batch_kill_points POINT N -- OTPKI-ARGS...

POINT (the process dies on the N-th time it gets there):
  registered     a chunk's owners were registered, inside its still open registration transaction
  issuing        a chunk's owners are registered and committed, its certificates not yet signed
  temp-file      a certificate's temp file is written and flushed, before the rename
  renamed        a certificate file was renamed into place (the chunk's rows are not committed yet)
  before-commit  a chunk's files are in place and durable, its rows not committed
  committed      a chunk's certificates have committed
  recorder-flushed    (--workers N > 1) the recording process flushed the files of the chunks ready, before
                      their transaction, and at least N files in all (how many chunks one flush carries
                      depends on timing: counting files, the kill happens on every run)
  recorder-committed  (--workers N > 1) the recording process committed the chunks ready, and at least N
                      certificates in all
  worker-sent         (--workers N > 1) the first worker dies after sending its N-th signed chunk
  worker-raises       (--workers N > 1) the first worker raises an error after sending its N-th signed chunk
  none           no kill point (for a kill from outside)
  same-serial    no kill: every process's first certificate gets one fixed serial (N ignored), so forked
                 workers clash on it and the store must refuse the second
Chunks are 3 CSRs here (100 in production) so that a handful of CSRs spans several commits. Give
`--workers 1` for the points of the one-process path: forked workers would inherit the kill point and die
instead of the command. The recorder-* points act in the command only, worker-sent in the first worker only.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

import otpki.batch_pool
import trustlists.authority
import trustlists.batch
from otpki.cli.main import app
from trustlists.authority import CertificateAuthority
from trustlists.errors import StoreBusy
from trustlists.registry import Registry


def _die_on_call(owner: Any, name: str, n: int, *, before: bool) -> None:
    original: Callable[..., Any] = getattr(owner, name)
    calls = itertools.count(1)  # files are written from several threads: count atomically

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = next(calls)
        if before and call == n:
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if not before and call == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, wrapper)


def _die_after_items(owner: Any, name: str, n: int, items: Callable[[tuple[Any, ...]], int]) -> None:
    """In this process only (not in forked workers): SIGKILL after the call that brings the number of items
    handled (`items` of each call's arguments) to n or more."""
    original: Callable[..., Any] = getattr(owner, name)
    pid, done = os.getpid(), [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if os.getpid() == pid:
            done[0] += items(args)
            if done[0] >= n:
                os.kill(pid, signal.SIGKILL)
        return result

    setattr(owner, name, wrapper)


FIXED_SERIAL = (1 << 158) | 0x5EED


def _first_serial_fixed() -> None:
    original = trustlists.authority.random_serial
    first_done: set[int] = set()  # pids: forked workers inherit it empty (the command signs nothing itself)

    def serial() -> int:
        if os.getpid() in first_done:
            return original()
        first_done.add(os.getpid())
        return FIXED_SERIAL

    trustlists.authority.random_serial = serial  # type: ignore[attr-defined]  # the module's own import


def _first_worker_fails_after(n: int, *, dies: bool) -> None:
    """The worker of the first share SIGKILLs itself (or raises) once its n-th chunk was sent (it asks for the
    next)."""
    original = otpki.batch_pool.sign_chunks

    def chunks(*args: Any, **kwargs: Any) -> Iterator[trustlists.batch.SignedChunk]:
        for k, chunk in enumerate(original(*args, **kwargs), 1):
            yield chunk
            if kwargs["shard"][0] == 0 and k == n:
                if dies:
                    os.kill(os.getpid(), signal.SIGKILL)
                raise StoreBusy("the store stayed locked (a test's)")

    otpki.batch_pool.sign_chunks = chunks  # the module's own import, which the forked workers call


def main() -> None:
    point, n, sep, *args = sys.argv[1:]
    assert sep == "--", __doc__
    trustlists.batch.CHUNK = 3
    count = int(n)
    if point == "registered":
        _die_on_call(Registry, "register_many", count, before=False)
    elif point == "issuing":
        _die_on_call(CertificateAuthority, "issue_approved", count, before=True)
    elif point in ("before-commit", "committed"):
        _die_on_call(CertificateAuthority, "_commit", count, before=point == "before-commit")
    elif point in ("temp-file", "renamed"):
        # The batch puts every certificate file in place with os.replace (and nothing else in a batch run does).
        _die_on_call(os, "replace", count, before=point == "temp-file")
    elif point == "recorder-flushed":
        _die_after_items(trustlists.batch, "_flush_data", count, lambda args: len(args[1]))
    elif point == "recorder-committed":
        _die_after_items(trustlists.batch.ChunkRecorder, "_record", count, lambda args: len(args[1].slots))
    elif point in ("worker-sent", "worker-raises"):
        _first_worker_fails_after(count, dies=point == "worker-sent")
    elif point == "same-serial":
        _first_serial_fixed()
    elif point != "none":
        raise SystemExit(f"unknown kill point {point!r}")
    app(args=args, prog_name="otpki")


if __name__ == "__main__":
    main()
