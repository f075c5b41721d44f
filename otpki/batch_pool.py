"""`otpki batch sign --workers N`: N forked processes sign, this process records, each at its own pace.

Signing is CPU work and one Python process uses one core; recording is mostly waiting (the files' flush, the
commit's fsync). So the workers read, verify, check, sign and write the certificate files to temp files
(`trustlists.batch.sign_chunks`: a store read per chunk, nothing stored, nothing flushed) and send each signed
chunk down a pipe; this process makes the files durable and puts them in place (one syncfs for everything that
is ready, the renames, one directory flush), then registers the devices and commits the certificates in one
transaction (`ChunkRecorder`), while the workers sign on. The
waits of this process leave its core to the workers, and one process writes the store: the audit chain is
appended by one connection, and no worker waits for another's write lock.

The workers are forked from the command after its imports (no second interpreter start-up, no re-import: what a
worker costs is opening the store and the CA key), and before any store is open here (a SQLite connection must
not cross a fork). A pipe holds a few signed chunks: a worker runs at most that far ahead of what is recorded.
A worker dies with the command (PR_SET_PDEATHSIG on Linux): a batch killed with SIGKILL leaves no orphan signing
on. What a worker signed and this process did not record is never handed out (its file, if put in place, holds
a certificate the inventory does not know); the next run signs it again, replaces the file and removes the temp
files of dead processes.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import pickle
import signal
import sys
from collections.abc import Callable
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from pathlib import Path

from otpki.config import Settings
from otpki.runtime import open_engine
from trustlists.batch import BatchReport, ChunkRecorder, prepare_output, sign_chunks

_PR_SET_PDEATHSIG = 1
_PIPE_BYTES = 1 << 20
_CHUNK, _DONE, _FAILED = "chunk", "done", "failed"


def sign_in_processes(settings: Settings, in_dir: Path, out_dir: Path, *, group: str, site: str | None,
                      actor: str, workers: int, on_done: Callable[[int], None] | None = None) -> BatchReport:
    """The report of `workers` processes signing the `workers` shares of `in_dir` (csr_files), recorded here.

    A worker's error or death does not stop the others, nor the recording of what they sign; then ValueError
    names the failed workers (what was recorded is recorded; running the batch again completes the rest)."""
    prepare_output(out_dir)  # before the workers look at it
    context = get_context("fork")
    pipes: dict[Connection, int] = {}
    processes = []
    parent = os.getpid()
    for i in range(workers):
        reader, writer = context.Pipe(duplex=False)
        _widen(writer)
        process = context.Process(target=_sign_share, args=(settings, in_dir, out_dir, group, site, (i, workers),
                                                             writer, parent), daemon=True, name=f"batch-worker-{i + 1}")
        process.start()
        writer.close()
        pipes[reader] = i
        processes.append(process)
    errors: dict[int, str] = {}
    finished: set[int] = set()
    announced = 0
    try:
        engine = open_engine(settings)
        try:
            recorder = ChunkRecorder(engine, out_dir, group=group, site=site, actor=actor)
            while pipes:
                chunks = []
                for ready in wait(list(pipes)):
                    assert isinstance(ready, Connection)
                    i = pipes[ready]
                    while True:  # everything this worker sent meanwhile
                        try:
                            kind, payload = pickle.loads(ready.recv_bytes())
                        except EOFError:
                            kind, payload = _FAILED, "ended without finishing its share (killed?)"
                        if kind != _CHUNK:
                            break
                        chunks.append(payload)
                        if not ready.poll():
                            break
                    if kind == _CHUNK:
                        continue
                    del pipes[ready]
                    ready.close()
                    finished.add(i)
                    if kind == _FAILED:
                        errors[i] = payload
                recorder.record(chunks)  # what every worker sent meanwhile, with one commit
                while announced in finished:  # in worker order, as each is done
                    if on_done is not None:
                        on_done(announced)
                    announced += 1
        finally:
            engine.close()
    finally:
        for process in processes:
            if process.is_alive():  # only when this process failed: nothing more will be recorded
                process.kill()
            process.join()
        for reader in pipes:
            reader.close()
    if errors:
        raise ValueError("; ".join(f"worker {i + 1}: {text}" for i, text in sorted(errors.items()))
                         + " (run the batch again: it completes what is missing)")
    return recorder.report()


def _widen(pipe: Connection) -> None:
    """Room for several signed chunks in the pipe (Linux: up to 1 MiB, /proc/sys/fs/pipe-max-size), so that a
    worker goes on signing while this process waits for a flush, instead of waiting with it."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)


def _sign_share(settings: Settings, in_dir: Path, out_dir: Path, group: str, site: str | None,
                shard: tuple[int, int], pipe: Connection, parent: int) -> None:
    _die_with_parent(parent)
    try:
        engine = open_engine(settings)
        try:
            for chunk in sign_chunks(engine, in_dir, out_dir, group=group, site=site, shard=shard):
                pipe.send_bytes(pickle.dumps((_CHUNK, chunk), pickle.HIGHEST_PROTOCOL))
        finally:
            engine.close()
        pipe.send_bytes(pickle.dumps((_DONE, None)))
    except Exception as exc:  # reported by the parent with the others'
        pipe.send_bytes(pickle.dumps((_FAILED, str(exc) or type(exc).__name__)))
    finally:
        pipe.close()


def _die_with_parent(parent: int) -> None:
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
