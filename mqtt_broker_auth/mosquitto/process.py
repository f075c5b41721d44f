"""Run a Mosquitto process with otpki's generated configuration (tests, demo, bench).

The broker's TLS files (cafile, crlfile, server cert and key) must be in place before `start()`: Mosquitto
refuses to start without them, which is the safe way round. `start()` writes mosquitto.conf and, when absent,
the dynsec file with otpki's admin user (dynsec_file.py), then waits until both listeners accept TCP connections.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from datetime import timedelta
from pathlib import Path

from mqtt_broker_auth.mosquitto.bundle import mosquitto_bundle
from mqtt_broker_auth.mosquitto.config import MosquittoSettings, render_config
from mqtt_broker_auth.mosquitto.dynsec_file import write_dynsec_file
from mqtt_broker_auth.mosquitto.files import install_trust_files
from mqtt_broker_auth.tls_identity import ensure_tls_identity
from trustlists.engine import Engine
from trustlists.errors import OtpkiError
from trustlists.safe_files import private_directory, write_public

START_TIMEOUT_S = 15.0


class MosquittoStartError(OtpkiError):
    reason = "mosquitto_start_failed"


def provision_broker(engine: Engine, settings: MosquittoSettings, *, group: str = "mqtt-device",
                     broker_group: str = "mqtt-broker", name: str = "mosquitto", actor: str = "otpki") -> None:
    """Give the broker what it needs before its first start: a server certificate from `broker_group`
    (registered for its listen address; reused while current) and the device group's cafile/crlfile, installed
    through files.py."""
    owner = engine.registry.find(broker_group, name=name) or engine.registry.register(
        group=broker_group, name=name, actor=actor, ip_addresses=[settings.host])
    private_directory(settings.workdir)  # the server key and the dynsec file live here
    ensure_tls_identity(engine, owner, settings.certfile, settings.keyfile, eku="serverAuth", actor=actor,
                        hostname=settings.host)
    ca_pem, crl_pem = mosquitto_bundle(engine.trustlists.get(group, imported=False))
    install_trust_files(settings.cafile, settings.crlfile, ca_pem, crl_pem, reload=None,
                        openssl=settings.openssl_binary,
                        min_remaining=timedelta(seconds=settings.crl_min_remaining_s))


class MosquittoProcess:
    def __init__(self, settings: MosquittoSettings) -> None:
        self.settings = settings
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.settings.log_file.read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        return "\n".join(text.splitlines()[-lines:])

    def start(self, *, fresh_dynsec: bool = True) -> MosquittoProcess:
        s = self.settings
        private_directory(s.workdir)
        missing = [str(p) for p in (s.cafile, s.crlfile, s.certfile, s.keyfile) if not p.exists()]
        if missing:
            raise MosquittoStartError(f"TLS files missing: {', '.join(missing)}", reason="tls_files_missing")
        write_public(s.conf_path, render_config(s).encode())
        if fresh_dynsec or not s.dynsec_file.exists():
            write_dynsec_file(s)
        self._proc = subprocess.Popen([str(s.binary), "-c", str(s.conf_path)], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT_S
        pending = {(s.host, s.port), (s.admin_host, s.admin_port)}
        while pending:
            if self._proc.poll() is not None:
                stderr = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise MosquittoStartError(f"mosquitto exited with rc {self._proc.returncode}: {stderr.strip()}\n"
                                          f"{self.log_tail()}")
            for address in list(pending):
                with contextlib.suppress(OSError), socket.create_connection(address, timeout=0.5):
                    pending.discard(address)
            if pending and time.monotonic() > deadline:
                self.stop()
                raise MosquittoStartError(f"mosquitto did not listen on {sorted(pending)} within {START_TIMEOUT_S} s"
                                          f"\n{self.log_tail()}", reason="mosquitto_start_timeout")
            if pending:
                time.sleep(0.05)
        return self

    def hup(self) -> None:
        """Ask the broker to reload cafile/crlfile (only ever after files.install_trust_files verified them)."""
        if not self.running() or self._proc is None:
            raise MosquittoStartError("mosquitto is not running", reason="mosquitto_not_running")
        self._proc.send_signal(signal.SIGHUP)

    def stop(self, timeout_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        if proc.stderr:
            proc.stderr.close()


def hup_from_pid_file(pid_file: Path) -> None:
    """SIGHUP a broker started elsewhere (systemd) through the pid file its config names."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError) as exc:
        raise MosquittoStartError(f"cannot read the broker pid from {pid_file}: {exc}",
                                  reason="mosquitto_not_running") from None
    os.kill(pid, signal.SIGHUP)
