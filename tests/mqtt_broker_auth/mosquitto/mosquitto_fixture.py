"""A real Mosquitto broker kept in sync with a real engine, and independent clients to probe it.

`mosquitto_lab` (module scope): an engine on a tmp SQLite file whose CAs were made 400 days ago (so an expired
device certificate can be issued honestly), a broker server certificate from group `mqtt-broker`, the
device group's cafile/crlfile installed through files.py, a Mosquitto process on free 127.0.0.1 ports and a
`MosquittoSync`. Clients are the Debian `mosquitto_pub`/`mosquitto_sub` and paho-mqtt.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr

from mqtt_broker_auth.mosquitto.config import MosquittoSettings
from mqtt_broker_auth.mosquitto.process import MosquittoProcess, provision_broker
from mqtt_broker_auth.mosquitto.sync import MosquittoSync
from tests.mqtt_broker_auth.conftest import DeviceCert, issue_device, mqtt_config
from trustlists.clock import utcnow
from trustlists.engine import Engine
from trustlists.models import RevocationReason
from trustlists.testing import free_port, make_engine, wait_until

ACTOR = "mosquitto-test"
GROUP = "mqtt-device"
WAIT_S = 10.0  # generous upper bound for every condition we wait for


class OffsetClock:
    """Real time shifted by `offset`: lets the fixture issue certificates 'in the past'."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return utcnow() + self.offset


@dataclass
class MosquittoLab:
    engine: Engine
    settings: MosquittoSettings
    process: MosquittoProcess
    sync: MosquittoSync
    root_ca_file: Path
    pki_dir: Path
    certs_dir: Path
    expired: DeviceCert
    reloads: list[float] = field(default_factory=list)

    def device(self, name: str, *, site: str = "north", attributes: dict[str, object] | None = None) -> DeviceCert:
        return issue_device(self.engine, name, self.certs_dir, site=site, attributes=attributes)

    def revoke(self, cert: DeviceCert) -> None:
        self.engine.authority.revoke(cert.serial_hex, reason=RevocationReason.KEY_COMPROMISE, actor=ACTOR)

    def topic(self, name: str, suffix: str = "telemetry", *, site: str = "north") -> str:
        return f"plant/{site}/{name}/{suffix}"

    def log_text(self) -> str:
        return self.settings.log_file.read_text(errors="replace")


@pytest.fixture(scope="module")
def mosquitto_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoLab]:
    base = tmp_path_factory.mktemp("mosquitto")
    clock = OffsetClock()
    clock.offset = -timedelta(days=400)
    engine = make_engine(base / "pki", clock=clock, config=mqtt_config())
    process: MosquittoProcess | None = None
    sync: MosquittoSync | None = None
    try:
        engine.hierarchy.initialize(actor=ACTOR)
        certs = base / "certs"
        expired = issue_device(engine, "dev-expired", certs)  # 365-day lifetime, issued 400 days ago
        clock.offset = timedelta()
        engine.authority.refresh_crls(actor=ACTOR, force=True)  # CRLs signed "today"

        settings = MosquittoSettings(workdir=base / "broker", port=free_port(), admin_port=free_port(),
                                     admin_password=SecretStr(secrets.token_urlsafe(16)))
        provision_broker(engine, settings, group=GROUP, name="broker-1", actor=ACTOR)
        root_ca_file = base / "root.pem"
        root_ca_file.write_bytes(x509.load_der_x509_certificate(engine.hierarchy.root().certificate_der)
                                 .public_bytes(Encoding.PEM))

        process = MosquittoProcess(settings).start()
        lab_reloads: list[float] = []

        def reload() -> None:
            lab_reloads.append(utcnow().timestamp())
            assert process is not None
            process.hup()

        sync = MosquittoSync(engine, settings, GROUP, reload=reload, interval_s=0.2)
        yield MosquittoLab(engine=engine, settings=settings, process=process, sync=sync, root_ca_file=root_ca_file,
                           pki_dir=base / "pki", certs_dir=certs, expired=expired, reloads=lab_reloads)
    finally:
        if sync is not None and sync._dynsec is not None:
            sync._dynsec.close()
        if process is not None:
            process.stop()
        engine.close()


# -- the Debian command-line clients -------------------------------------------------------------------
def cli_args(lab: MosquittoLab, cert: DeviceCert | None) -> list[str]:
    args = ["-h", "127.0.0.1", "-p", str(lab.settings.port), "--cafile", str(lab.root_ca_file), "-V", "mqttv311",
            "-d"]
    if cert is not None:
        args += ["--cert", str(cert.cert_file), "--key", str(cert.key_file)]
    return args


def mosquitto_pub(lab: MosquittoLab, cert: DeviceCert | None, topic: str, message: str = "hello", *,
                  client_id: str | None = None) -> subprocess.CompletedProcess[str]:
    args = ["mosquitto_pub", *cli_args(lab, cert), "-q", "1", "-t", topic, "-m", message]
    if client_id:
        args += ["-i", client_id]
    return subprocess.run(args, capture_output=True, text=True, timeout=WAIT_S, check=False)


# -- paho --------------------------------------------------------------------------------------------
class PahoDevice:
    """One mTLS paho client; records CONNACK, SUBACK, PUBACK reason codes, messages and disconnects."""

    def __init__(self, lab: MosquittoLab, cert: DeviceCert | None, *, client_id: str = "",
                 protocol: int = mqtt.MQTTv5) -> None:
        self.lab = lab
        self.protocol = protocol
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                                  reconnect_on_failure=False)
        ctx = ssl.create_default_context(cafile=str(lab.root_ca_file))
        if cert is not None:
            ctx.load_cert_chain(str(cert.cert_file), str(cert.key_file))
        self.client.tls_set_context(ctx)
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack: Any = None
        self.disconnect_reason: Any = None
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._acks: dict[int, Any] = {}
        self._ack_cv = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: Any, props: object) -> None:
        self.connack = reason
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: Any,
                       props: object) -> None:
        self.disconnect_reason = reason
        self.disconnected.set()

    def _ack(self, mid: int, value: Any) -> None:
        with self._ack_cv:
            self._acks[mid] = value
            self._ack_cv.notify_all()

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason: Any, props: object) -> None:
        self._ack(mid, reason)

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, reasons: list[Any],
                      props: object) -> None:
        self._ack(mid, reasons)

    def wait_ack(self, mid: int) -> Any:
        with self._ack_cv:
            assert self._ack_cv.wait_for(lambda: mid in self._acks, WAIT_S), f"no ack for mid {mid}"
            return self._acks.pop(mid)

    def connect(self) -> PahoDevice:
        """Connect and wait for CONNACK; raises what the TLS handshake raised (ssl.SSLError) on refusal."""
        self.client.connect("127.0.0.1", self.lab.settings.port, keepalive=30,
                            clean_start=True if self.protocol == mqtt.MQTTv5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY)
        self.client.loop_start()
        wait_until(lambda: self.connected.is_set() or self.disconnected.is_set(), "a CONNACK or a disconnect",
                   timeout=WAIT_S)
        return self

    def subscribe(self, topic: str) -> Any:
        rc, mid = self.client.subscribe(topic, qos=1)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        return self.wait_ack(mid)[0]

    def publish(self, topic: str, payload: str = "x") -> Any:
        info = self.client.publish(topic, payload, qos=1)
        return self.wait_ack(info.mid)

    def next_message(self, timeout: float = WAIT_S) -> mqtt.MQTTMessage | None:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def paho_clients() -> Iterator[list[PahoDevice]]:
    """Collects clients a test opens and closes them all afterwards."""
    opened: list[PahoDevice] = []
    yield opened
    for client in opened:
        client.close()


def tls_alert(lab: MosquittoLab, cert: DeviceCert | None) -> str:
    """Handshake with a plain TLS socket and return the alert the broker sends; fails if it sends none.

    Under TLS 1.3 the client's handshake completes before the server has checked the client certificate, so
    the refusal arrives as an alert on the first read.
    """
    ctx = ssl.create_default_context(cafile=str(lab.root_ca_file))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert_file), str(cert.key_file))
    try:
        with socket.create_connection(("127.0.0.1", lab.settings.port), timeout=WAIT_S) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            data = tls.recv(1)
    except ssl.SSLError as exc:
        return str(exc)
    raise AssertionError(f"the broker sent no TLS alert (read {data!r})")
