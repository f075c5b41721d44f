"""MQTT device simulators end to end: IDevID -> enrollment over MQTT -> mTLS telemetry -> renewal -> revocation.

The lifecycle runs on otpki's embedded amqtt broker (mTLS required, per-device ACL, live revocation), where a
revoked device is dropped and its reconnects refused. Telemetry delivery is observed on the permissive plain
broker, where a test subscriber may read every device's topics (the embedded broker's ACL forbids exactly that).
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import pytest
from cryptography.hazmat.primitives import serialization
from gmqtt import Client as GmqttClient
from gmqtt.mqtt.constants import MQTTv311

from mqtt_broker_auth.embedded.broker import EmbeddedBroker
from mqtt_broker_auth.enrollment.service import EnrollmentService
from simulators.device_fleet import FleetConfig, prepare, register_fleet, run_fleet
from simulators.device_fleet import main as fleet_main
from simulators.manufacturer import Manufacturer
from simulators.mqtt_device import DeviceConfig, DeviceState, MqttDevice
from tests.mqtt_broker_auth.conftest import ACTOR, from_issued, mqtt_config
from tests.mqtt_broker_auth.plain_broker import start_plain_broker
from trustlists.engine import Engine
from trustlists.models import RevocationReason
from trustlists.testing import eventually, initialized_engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = initialized_engine(tmp_path / "pki", config=mqtt_config(), actor=ACTOR)  # real clock, as devices use
    yield eng
    eng.close()


@pytest.fixture
def manufacturer(engine: Engine) -> Manufacturer:
    maker = Manufacturer.create("ACME Devices")
    engine.trustlists.import_external("mqtt-device", maker.ca_pem.encode(), list_name="trusted",
                                      note="ACME IDevID CA", actor=ACTOR)
    return maker


class Site:
    """A broker plus the enrollment service on it, and what devices need to reach them."""

    def __init__(self, engine: Engine, manufacturer: Manufacturer, tmp_path: Path, host: str, port: int,
                 ca_file: Path) -> None:
        self.engine, self.manufacturer, self.tmp_path = engine, manufacturer, tmp_path
        self.host, self.port, self.ca_file = host, port, ca_file
        self.devices: list[MqttDevice] = []
        self.service: EnrollmentService | None = None

    async def start_service(self) -> None:
        owner = self.engine.registry.register(group="mqtt-device", name="enrollment-svc", site="north",
                                              actor=ACTOR, attributes={"role": "enrollment-service"})
        cert = from_issued(self.engine.authority.issue_with_new_key(owner_id=owner.id, actor=ACTOR), owner,
                           self.tmp_path / "svc")
        self.service = EnrollmentService(self.engine, host=self.host, port=self.port, ca_file=self.ca_file,
                                         cert_file=cert.cert_file, key_file=cert.key_file)
        await self.service.start()

    def device(self, name: str, library: str, *, enrollment: str = "csr", allow_listed: bool = True,
               **overrides: object) -> MqttDevice:
        idevid = self.manufacturer.issue_idevid(f"SN-{name}")
        attributes = {"bootstrap": [idevid.allow_list_entry()]} if allow_listed else {}
        self.engine.registry.register(group="mqtt-device", name=name, site="north", actor=ACTOR,
                                      attributes=attributes)
        workdir = self.tmp_path / "devices" / name
        cert_file, key_file = idevid.write(workdir / "factory")
        config = DeviceConfig(name=name, site="north", library=library, host=self.host, port=self.port,  # type: ignore[arg-type]
                              ca_file=self.ca_file, workdir=workdir, bootstrap_cert_file=cert_file,
                              bootstrap_key_file=key_file, enrollment=enrollment,  # type: ignore[arg-type]
                              telemetry_interval_s=0.2, request_timeout_s=20, **overrides)  # type: ignore[arg-type]
        device = MqttDevice(config)
        self.devices.append(device)
        return device

    async def close(self) -> None:
        for device in self.devices:
            await device.stop()
        if self.service is not None:
            await self.service.stop()


@pytest.fixture
async def embedded_site(engine: Engine, manufacturer: Manufacturer, tmp_path: Path) -> AsyncIterator[Site]:
    broker = EmbeddedBroker(engine, workdir=tmp_path / "broker", port=0)
    await broker.start()
    ca_file = tmp_path / "broker-ca.pem"
    ca_file.write_bytes(broker.server_ca_pem())
    site = Site(engine, manufacturer, tmp_path, "127.0.0.1", broker.port, ca_file)
    try:
        await site.start_service()
        yield site
    finally:
        await site.close()
        await broker.stop()


@pytest.fixture
async def plain_site(engine: Engine, manufacturer: Manufacturer, tmp_path: Path) -> AsyncIterator[Site]:
    broker = await start_plain_broker(engine, tmp_path / "broker")
    site = Site(engine, manufacturer, tmp_path, broker.host, broker.port, broker.server_ca_file)
    try:
        await site.start_service()
        yield site
    finally:
        await site.close()
        await broker.stop()


async def waited(awaitable: Awaitable[object], timeout: float = 30.0) -> None:
    await asyncio.wait_for(awaitable, timeout)


@pytest.mark.parametrize(("library", "enrollment"), [("paho", "csr"), ("gmqtt", "server_keygen")])
async def test_lifecycle_on_embedded_broker(engine: Engine, embedded_site: Site, library: str,
                                            enrollment: str) -> None:
    device = embedded_site.device(f"pump-{library}", library, enrollment=enrollment)
    device.start()
    await waited(device.online.wait())
    first = device.serial_hex
    assert first is not None and device.state == DeviceState.ONLINE
    record = engine.inventory.get(first)
    owner = engine.registry.find("mqtt-device", name=device.name)
    assert owner is not None and record.owner_id == owner.id
    await eventually(lambda: device.telemetry_sent >= 2, "telemetry")

    renewed = await device.renew_now()
    assert renewed != first and device.serial_hex == renewed
    await eventually(lambda: device.state == DeviceState.ONLINE, "online with the renewed certificate")
    assert engine.inventory.get(first).superseded_by == renewed
    assert engine.inventory.get(renewed).owner_id == owner.id
    sent = device.telemetry_sent
    await eventually(lambda: device.telemetry_sent > sent, "telemetry after renewal")

    engine.authority.revoke(renewed, reason=RevocationReason.KEY_COMPROMISE, actor=ACTOR)
    await waited(device.ended.wait())
    assert device.state == DeviceState.REVOKED, device.last_error
    assert DeviceState.ONLINE in device.history


async def test_revoked_before_connecting_is_refused(engine: Engine, embedded_site: Site) -> None:
    device = embedded_site.device("valve-r", "gmqtt")
    owner = engine.registry.find("mqtt-device", name="valve-r")
    assert owner is not None
    issued = engine.authority.issue_with_new_key(owner_id=owner.id, actor=ACTOR)
    cert = from_issued(issued, owner, device.config.workdir)  # writes valve-r.crt/.key where the device looks
    assert cert.cert_file == device.config.operational_cert_file
    engine.authority.revoke(issued.record.serial, reason=RevocationReason.KEY_COMPROMISE, actor=ACTOR)
    device.start()
    await waited(device.ended.wait())
    assert device.state == DeviceState.REFUSED, device.last_error


async def test_device_not_allow_listed_fails_enrollment(embedded_site: Site) -> None:
    device = embedded_site.device("rogue-1", "paho", allow_listed=False, enroll_attempts=1)
    device.start()
    await waited(device.ended.wait())
    assert device.state == DeviceState.FAILED and "enrollment" in (device.last_error or "")
    assert device.certificate is None


async def test_telemetry_of_both_libraries_reaches_a_subscriber(plain_site: Site) -> None:
    received: dict[str, int] = {}
    subscribed = asyncio.Event()

    def on_message(client: object, topic: str, payload: bytes, qos: int, properties: object) -> int:
        body = json.loads(payload)
        assert topic == f"plant/north/{body['device']}/telemetry"
        received[body["device"]] = received.get(body["device"], 0) + 1
        return 0

    observer = GmqttClient("observer")
    observer.on_message = on_message
    observer.on_subscribe = lambda *args: subscribed.set()
    context = ssl.create_default_context(cafile=str(plain_site.ca_file))
    await observer.connect(plain_site.host, plain_site.port, ssl=context, version=MQTTv311)
    try:
        observer.subscribe("plant/#", qos=1)
        await waited(subscribed.wait())
        devices = [plain_site.device("meter-paho", "paho"), plain_site.device("meter-gmqtt", "gmqtt")]
        for device in devices:
            device.start()
        await eventually(lambda: all(received.get(d.name, 0) >= 2 for d in devices), "telemetry from both")
        assert all(d.state == DeviceState.ONLINE for d in devices)
    finally:
        await observer.disconnect()


async def test_fleet_enrolls_a_mixed_fleet(engine: Engine, embedded_site: Site, tmp_path: Path) -> None:
    config = FleetConfig(devices=4, workdir=tmp_path / "fleet", host=embedded_site.host, port=embedded_site.port,
                         ca_file=embedded_site.ca_file, enrollment="mix", enroll_concurrency=2,
                         telemetry_interval_s=0.2, duration_s=0.5, request_timeout_s=20)
    # The fleet's manufacturer is the one the broker already trusts (no wait for a trust-list reload).
    maker_dir = config.workdir / "manufacturer"
    maker_dir.mkdir(parents=True)
    (maker_dir / "ca.pem").write_text(embedded_site.manufacturer.ca_pem)
    (maker_dir / "ca.key").write_bytes(embedded_site.manufacturer.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    assert await fleet_main(["--devices", "4", "--workdir", str(config.workdir), "--prepare-only"]) == 0
    manifest = prepare(config)  # idempotent: the same IDevIDs as the command made
    assert [d.name for d in manifest.devices] == ["dev-0000", "dev-0001", "dev-0002", "dev-0003"]
    assert register_fleet(engine, manifest) == 4
    summary = await run_fleet(config, manifest)
    assert summary.devices == summary.enrolled == summary.online_at_end == 4, summary
    assert summary.states == {"stopped": 4} and not summary.failures
    assert summary.telemetry_messages >= 4 and summary.enrollment_seconds["max"] > 0
    assert len(engine.inventory.query(group="mqtt-device")) == 4 + 1  # the devices and the service


def test_renewal_is_due_inside_the_window(engine: Engine, tmp_path: Path) -> None:
    owner = engine.registry.register(group="mqtt-device", name="clocked", site="north", actor=ACTOR)
    issued = engine.authority.issue_with_new_key(owner_id=owner.id, actor=ACTOR)
    workdir = tmp_path / "clocked"
    from_issued(issued, owner, workdir)
    now = [datetime.now(UTC)]
    config = DeviceConfig(name="clocked", port=1, ca_file=workdir / "none", workdir=workdir,
                          bootstrap_cert_file=workdir / "none", bootstrap_key_file=workdir / "none",
                          renewal_window=timedelta(days=30))
    device = MqttDevice(config, clock=lambda: now[0])
    assert not device.renewal_due()
    now[0] = issued.record.not_after - timedelta(days=29)
    assert device.renewal_due()


async def test_online_goes_down_with_the_session_a_renewal_ends(embedded_site: Site) -> None:
    """`online` is what watchers wait on: set while an operational session is up. A renewal ends the session of the
    old certificate; a watcher that still saw `online` stopped the device in the middle of its reconnect (whose late
    CONNECT then took over the session opened next with the same client id: a Mosquitto test's flake)."""
    device = embedded_site.device("gauge-1", "paho")
    device.start()
    await waited(device.online.wait())
    renewed = await device.renew_now()
    assert not device.online.is_set(), device.state  # the old session is closing: nobody should count on it
    await waited(device.online.wait())
    assert device.state == DeviceState.ONLINE and device.serial_hex == renewed


@pytest.mark.parametrize("library", ["paho", "gmqtt"])
async def test_a_device_stopped_while_connecting_leaves_no_connection_behind(
        manufacturer: Manufacturer, tmp_path: Path, library: Literal["paho", "gmqtt"]) -> None:
    """The TLS handshake and CONNECT run in a worker thread nobody can interrupt: stop() returns only once that
    attempt is over and its socket closed, so no CONNECT with the device's client id can reach a broker after."""
    idevid = manufacturer.issue_idevid("SN-stuck")
    cert_file, key_file = idevid.write(tmp_path / "factory")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(manufacturer.ca_pem)
    with socket.socket() as tarpit:  # accepts the connection, never answers the ClientHello
        tarpit.bind(("127.0.0.1", 0))
        tarpit.listen()
        tarpit.settimeout(30)
        device = MqttDevice(DeviceConfig(name="stuck-1", port=tarpit.getsockname()[1], ca_file=ca_file,
                                         workdir=tmp_path / "stuck-1", bootstrap_cert_file=cert_file,
                                         bootstrap_key_file=key_file, connect_timeout_s=2, enroll_attempts=1,
                                         library=library))
        device.start()
        conn, _ = await asyncio.to_thread(tarpit.accept)
        with conn:
            await device.stop()
            assert device.state == DeviceState.STOPPED
            assert _closed_by_peer(conn), "stop() returned while its connection attempt was still open"


def _closed_by_peer(conn: socket.socket) -> bool:
    """Whether the peer has closed its end: what it sent is drained without waiting, then EOF or nothing more."""
    conn.setblocking(False)
    try:
        while conn.recv(65536):
            pass
    except BlockingIOError:
        return False
    return True
