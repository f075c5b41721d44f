"""`otpki serve` as an operator runs it: a real process with every part, real sockets, curl and openssl as clients.

One process serves the GDS, the push scheduler, the upkeep, the embedded MQTT broker with enrollment, the HTTPS
console listener and the plain-HTTP listener; a part crashed through the test-only fault hook
(OTPKI_SERVE_TEST_FAULTS + SIGUSR1) is restarted on the same port while the others keep answering, and one
SIGTERM ends it all with exit 0 and no process left.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from typer.testing import CliRunner

from otpki.cli.main import app
from tests.small_pki import make_cert
from trustlists.testing import PASSPHRASE, free_port, initialized_engine, make_engine, wait_until

OTPKI = Path(sys.executable).parent / "otpki"


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    data: Path
    log: Path
    state: dict[str, object]
    root_pem: Path

    @property
    def web(self) -> str:
        return str(self.listeners["web"])

    @property
    def http(self) -> str:
        return str(self.listeners["http"])

    @property
    def listeners(self) -> dict[str, str]:
        listeners = self.state["listeners"]
        assert isinstance(listeners, dict)
        return listeners

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _env(data: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "OTPKI_CA_PASSPHRASE": PASSPHRASE.decode(), "OTPKI_DATA_DIR": str(data), **extra}


def _data_dir(tmp_path: Path, config: str) -> tuple[Path, Path]:
    data = tmp_path / "pki"
    eng = initialized_engine(data)
    try:
        root = next(ca for ca in eng.hierarchy.list() if ca.parent_id is None)
        root_pem = tmp_path / "root.pem"
        root_pem.write_bytes(x509.load_der_x509_certificate(root.certificate_der).public_bytes(Encoding.PEM))
    finally:
        eng.close()
    (data / "otpki.toml").write_text(config)
    return data, root_pem


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    config = f"""
[gds]
endpoint = "opc.tcp://127.0.0.1:{free_port()}/otpki/gds"
[mqtt]
port = 0
[web]
listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
[serve]
restart_initial_s = 3.0
push_interval_s = 3600
"""
    data, root_pem = _data_dir(tmp_path, config)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(OTPKI), "serve"], env=_env(data, OTPKI_SERVE_TEST_FAULTS="1"), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: "ready; stop with" in log.read_text(errors="replace") or proc.poll() is not None,
                   "otpki serve to be ready", timeout=120)
        assert proc.poll() is None, log.read_text()
        state = json.loads((data / "serve" / "state.json").read_text())
        yield Served(proc, data, log, state, root_pem)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # only when the test failed before its own SIGTERM
            proc.wait(timeout=30)


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True, text=True, timeout=60,
                          check=False)


def readiness(served: Served) -> tuple[int, dict[str, object]]:
    res = curl("--cacert", str(served.root_pem), "-w", "\n%{http_code}", f"{served.web}/readyz")
    assert res.returncode == 0, res.stderr
    body, _, code = res.stdout.rpartition("\n")
    return int(code), json.loads(body)


def part(body: dict[str, object], name: str) -> dict[str, object]:
    parts = body["parts"]
    assert isinstance(parts, list)
    return next(p for p in parts if p["name"] == name)


def tcp_answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return True
    except OSError:
        return False


def test_serve_runs_every_part_restarts_a_crashed_one_and_stops_on_sigterm(served: Served) -> None:
    # Every part is up and says where it serves; the HTTPS listener verifies against the plant root.
    code, body = readiness(served)
    assert code == 200 and body["ready"] is True, body
    assert {p["name"] for p in body["parts"]} == {"maintenance", "gds", "push", "mqtt", "web"}  # type: ignore[index, union-attr]
    mqtt_address = str(part(body, "mqtt")["detail"])
    gds_address = str(part(body, "gds")["detail"]).removeprefix("opc.tcp://").split("/")[0]
    assert tcp_answers(mqtt_address) and tcp_answers(gds_address)
    assert curl("--cacert", str(served.root_pem), f"{served.web}/healthz").stdout == '{"status":"alive"}'
    assert curl(f"{served.http}/healthz").stdout == '{"status":"alive"}'  # the plain-HTTP listener

    # Crash the MQTT part from inside: it is reported (503 naming it) while the others keep answering.
    (served.data / "serve" / "fault").write_text("mqtt")
    served.proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: readiness(served)[0] == 503, "readyz to report the crashed part")
    code, body = readiness(served)
    assert any("part mqtt: backoff" in p and "fault injected into mqtt" in p
               for p in body["problems"]), body  # type: ignore[union-attr]
    assert tcp_answers(gds_address)  # the GDS did not go down with it
    assert curl("--cacert", str(served.root_pem), f"{served.web}/healthz").returncode == 0

    # ... and restarted after its backoff, on the port the devices were told.
    wait_until(lambda: readiness(served)[0] == 200, "the MQTT part to be restarted", timeout=60)
    mqtt = part(readiness(served)[1], "mqtt")
    assert mqtt["state"] == "running" and mqtt["restarts"] == 1 and mqtt["detail"] == mqtt_address
    assert tcp_answers(mqtt_address)
    assert "part mqtt failed: InjectedFault" in served.output()
    eng = make_engine(served.data)
    try:
        failures = eng.audit_records(action="serve.part_failed")
    finally:
        eng.close()
    assert [(r.subject, r.details["restarts"]) for r in failures] == [("mqtt", 1)]

    # The web part itself: back after its backoff on the port it had (bound as port 0 the first time).
    (served.data / "serve" / "fault").write_text("web")
    served.proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: "part web failed: InjectedFault" in served.output(), "the web part's failure to be reported")
    wait_until(lambda: _answers(served), "the web listener to be back", timeout=60)
    assert part(readiness(served)[1], "web")["restarts"] == 1

    # One SIGTERM stops everything: exit 0, every port closed, no process of its session left.
    session = [p for p in psutil.process_iter(["pid"]) if _session_of(p.pid) == served.proc.pid]
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=60) == 0, served.output()
    assert "stopped" in served.output().splitlines()[-1]
    assert not (served.data / "serve" / "state.json").exists()
    wait_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in session),
               "every process of the service to end", timeout=10)
    for address in (mqtt_address, gds_address, served.web.removeprefix("https://"),
                    served.http.removeprefix("http://")):
        assert not tcp_answers(address), address


def _answers(served: Served) -> bool:
    res = curl("--cacert", str(served.root_pem), "-w", "\n%{http_code}", f"{served.web}/readyz")
    return res.returncode == 0 and res.stdout.endswith("\n200")


def _session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def test_https_listener_takes_client_certificates_of_the_plant_and_refuses_foreign_ones(served: Served,
                                                                                       tmp_path: Path) -> None:
    eng = make_engine(served.data)
    try:
        owner = eng.registry.register(group="mqtt-device", name="pump-7", actor="test")
        issued = eng.authority.issue_with_new_key(owner_id=owner.id, actor="test")
    finally:
        eng.close()
    assert issued.private_key is not None
    cert, key = tmp_path / "dev.pem", tmp_path / "dev.key"
    cert.write_bytes(x509.load_der_x509_certificate(issued.certificate_der).public_bytes(Encoding.PEM))
    key.write_bytes(issued.private_key)
    url = f"{served.web}/healthz"
    root = str(served.root_pem)

    assert curl("--cacert", root, url).stdout == '{"status":"alive"}'  # a browser sends none: welcome
    with_cert = curl("--cacert", root, "--cert", str(cert), "--key", str(key), url)
    assert with_cert.returncode == 0 and with_cert.stdout == '{"status":"alive"}', with_cert.stderr

    foreign_ca = make_cert("Foreign CA", None, ca=True)
    foreign = make_cert("pump-7", foreign_ca, ca=False)
    (tmp_path / "f.pem").write_bytes(foreign.pem)
    (tmp_path / "f.key").write_bytes(foreign.key_pem)
    refused = curl("--cacert", root, "--cert", str(tmp_path / "f.pem"), "--key", str(tmp_path / "f.key"), url)
    assert refused.returncode != 0 and refused.stdout == "", refused  # the handshake fails: no answer at all

    # The server certificate: issued by the engine for the listen address, verified by openssl.
    host, _, port = served.web.removeprefix("https://").rpartition(":")
    s_client = subprocess.run(["openssl", "s_client", "-connect", f"{host}:{port}", "-CAfile", root,
                               "-verify_ip", host, "-verify_return_error", "-showcerts"],
                              input="", capture_output=True, text=True, timeout=60, check=False)
    assert "Verify return code: 0 (ok)" in s_client.stdout, s_client.stdout + s_client.stderr
    assert "CN=otpki web-server CA" in s_client.stdout.replace(" = ", "=")
    # ... and in the inventory like any other certificate.
    eng = make_engine(served.data)
    try:
        owners = eng.registry.list("web-server")
    finally:
        eng.close()
    assert [o.name for o in owners] == ["otpki-web"] and owners[0].ip_addresses == ["127.0.0.1"]


def test_plain_http_console_is_refused_off_loopback(tmp_path: Path) -> None:
    data, _ = _data_dir(tmp_path, "")
    res = CliRunner().invoke(app, ["serve", "--listen", "0.0.0.0:0", "--insecure-http"], env=_env(data))
    assert res.exit_code == 2
    assert "plain HTTP only on a loopback address" in res.output and "0.0.0.0:0" in res.output
    assert not (data / "serve").exists()  # refused before anything started


def test_plain_http_console_on_loopback_when_asked(tmp_path: Path) -> None:
    config = "[serve]\ngds = false\npush = false\nmqtt = false\n[web]\nlisten = \"127.0.0.1:0\"\ntls = false\n"
    data, _ = _data_dir(tmp_path, config)
    log = tmp_path / "serve.log"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # systemd's end of Type=notify
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(60)
    with log.open("wb") as out:
        proc = subprocess.Popen([str(OTPKI), "serve"], env=_env(data, NOTIFY_SOCKET=str(tmp_path / "notify")),
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        assert notify.recv(256) == b"READY=1"
        wait_until(lambda: (data / "serve" / "state.json").exists() or proc.poll() is not None, "the listener",
                   timeout=60)
        url = json.loads((data / "serve" / "state.json").read_text())["listeners"]["web"]
        assert url.startswith("http://127.0.0.1:")
        assert curl(f"{url}/healthz").stdout == '{"status":"alive"}'
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C stops it as cleanly as SIGTERM
        rc = proc.wait(timeout=60)
    assert rc == 0, log.read_text()
    assert notify.recv(256) == b"STOPPING=1"
    notify.close()
    assert log.read_text().splitlines()[-1] == "stopped"


def test_listen_address_taken_is_one_line_and_exit_2(tmp_path: Path) -> None:
    data, _ = _data_dir(tmp_path, "[serve]\ngds = false\npush = false\nmqtt = false\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = subprocess.run([str(OTPKI), "serve", "--listen", f"127.0.0.1:{port}"], env=_env(data),
                             capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"the web console cannot listen on 127.0.0.1:{port}: the port is in use" in res.stderr


def test_https_listener_trusts_an_imported_manufacturer_ca_after_a_restart(served: Served, tmp_path: Path) -> None:
    """EST bootstraps devices by their manufacturer IDevID: the listener's TLS trusts the imported CAs too."""
    from simulators.manufacturer import Manufacturer

    maker = Manufacturer.create("ACME Devices")
    (tmp_path / "acme-ca.pem").write_text(maker.ca_pem)
    (tmp_path / "acme-crl.pem").write_text(maker.crl_pem())
    cert, key = maker.issue_idevid("SN-0042").write(tmp_path / "idevid")
    url = f"{served.web}/healthz"
    root = str(served.root_pem)
    before = curl("--cacert", root, "--cert", str(cert), "--key", str(key), url)
    assert before.returncode != 0  # not imported yet: a stranger's certificate

    env = _env(served.data)
    for name in ("acme-ca.pem", "acme-crl.pem"):
        result = CliRunner().invoke(app, ["trustlist", "import", "mqtt-device", str(tmp_path / name)], env=env)
        assert result.exit_code == 0, result.output
    (served.data / "serve" / "fault").write_text("web")  # a restart (a running one takes it at its next check)
    served.proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: "part web failed" in served.output(), "the web part to restart")
    wait_until(lambda: curl("--cacert", root, url).returncode == 0, "the web listener to be back", timeout=60)
    after = curl("--cacert", root, "--cert", str(cert), "--key", str(key), url)
    assert after.returncode == 0 and after.stdout == '{"status":"alive"}', after.stderr
