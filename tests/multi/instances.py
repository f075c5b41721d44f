"""Helpers for tests that run several otpki instances (real processes) on one PostgreSQL store."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from trustlists.testing import PASSPHRASE

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def cli_env(data_dir: Path, url: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "OTPKI_DATA_DIR": str(data_dir), "OTPKI_CA_PASSPHRASE": PASSPHRASE.decode(),
            "OTPKI_STORE_URL": url, **extra}


def otpki(data_dir: Path, url: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-m", "otpki.cli.main", *args], env=cli_env(data_dir, url, **extra),
                         capture_output=True, text=True, timeout=180, check=False, cwd=ROOT)
    assert res.returncode == 0, (args, res.stdout, res.stderr)
    return res


def second_instance(data_dir: Path, other: Path) -> Path:
    """Another instance's data directory: the same otpki.toml and encrypted CA key files (what every host of a
    deployment gets), nothing it made for itself."""
    shutil.copytree(data_dir, other, ignore=shutil.ignore_patterns("push", "*.db*"))
    return other


class Instances:
    """Long-running otpki processes; each killed at the end if still alive."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, data_dir: Path, url: str, *args: str, module: str = "otpki.cli.main",
              **extra: str) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        out = open(self.logs / f"instance-{n}.out", "wb")  # noqa: SIM115 - closed with the process in stop()
        err = open(self.logs / f"instance-{n}.err", "wb")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", module, *args], env=cli_env(data_dir, url, **extra),
                                stdout=out, stderr=err, cwd=ROOT)
        out.close()
        err.close()
        self.procs.append(proc)
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        n = self.procs.index(proc)
        return (self.logs / f"instance-{n}.err").read_text(errors="replace")[-3000:]

    def stdout(self, proc: subprocess.Popen[bytes]) -> str:
        n = self.procs.index(proc)
        return (self.logs / f"instance-{n}.out").read_text(errors="replace")

    def alive(self, *procs: subprocess.Popen[bytes]) -> Callable[[], None]:
        """A check for `wait_for`: fails with the process's log as soon as one of `procs` has exited."""
        def check() -> None:
            for proc in procs:
                assert proc.poll() is None, f"instance exited ({proc.returncode}): {self.log(proc)}"
        return check

    @staticmethod
    def kill9(proc: subprocess.Popen[bytes]) -> None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


@contextmanager
def instances(logs: Path) -> Iterator[Instances]:
    group = Instances(logs)
    try:
        yield group
    finally:
        group.stop()


def wait_for(what: str, check: Callable[[], T | None], *, deadline_s: float,
             alive: Callable[[], None] = lambda: None) -> T:
    """Poll `check` until it answers something true; AssertionError naming `what` at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        alive()
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {deadline_s:g} s: {what}")
        time.sleep(0.05)


def pid_of(instance_id: str) -> int:
    """The process id inside an instance id (trustlists.leases.new_instance_id: host:pid:random)."""
    return int(instance_id.split(":")[-2])


class SilentPlc:
    """A TCP server at a PLC's address that accepts and never answers: a push to it holds its connection open
    until the client gives up. Counts connections open at once (two pushes at the same time would show 2)."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self.endpoint = f"opc.tcp://127.0.0.1:{self.port}/plc"
        self._lock = threading.Lock()
        self.open = 0
        self.max_open = 0
        self.accepted: list[float] = []  # time.monotonic() of each connection
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.open += 1
                self.max_open = max(self.max_open, self.open)
                self.accepted.append(time.monotonic())
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    if not conn.recv(65536):
                        break
                except OSError:
                    break
        with self._lock:
            self.open -= 1

    def close(self) -> None:
        self._stopped = True
        self._sock.close()
