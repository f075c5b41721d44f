"""Bootstrap pins on the embedded broker, as an attacker tries them: an IDevID forged with a genuine device's CN
(anyone holding the manufacturer CA's key can make one) against real paho clients, a real enrollment service and
the device simulator, all over mTLS on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mqtt_broker_auth.embedded.broker import EmbeddedBroker
from mqtt_broker_auth.enrollment.service import EnrollmentService
from simulators.manufacturer import BootstrapCredential, Manufacturer
from simulators.mqtt_device import DeviceConfig, DeviceState, MqttDevice
from tests.mqtt_broker_auth.conftest import ACTOR, DeviceCert, from_issued, mqtt_config, sha256_hex
from tests.mqtt_broker_auth.embedded.test_amqtt_broker import WAIT, Client
from trustlists.engine import Engine
from trustlists.models import CertificateStatus, RevocationReason
from trustlists.testing import eventually, initialized_engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = initialized_engine(tmp_path / "pki", config=mqtt_config(), actor=ACTOR)  # real clock, as devices use
    yield eng
    eng.close()


@dataclass
class Plant:
    engine: Engine
    broker: EmbeddedBroker
    manufacturer: Manufacturer
    server_ca: Path
    tmp_path: Path
    clients: list[Client]
    devices: list[MqttDevice]

    def idevid_files(self, credential: BootstrapCredential, where: str) -> DeviceCert:
        cert_file, key_file = credential.write(self.tmp_path / where)
        der = x509.load_pem_x509_certificate(credential.certificate_pem.encode()).public_bytes(Encoding.DER)
        return DeviceCert(owner=None, certificate_der=der, chain_der=[], key_pem=credential.key_pem.encode(),
                          cert_file=cert_file, key_file=key_file)

    async def connect(self, cert: DeviceCert, client_id: str) -> tuple[Client, int | None]:
        client = Client(self.broker.port, self.server_ca, cert, client_id)
        self.clients.append(client)
        outcome = await asyncio.to_thread(client.connect)
        return client, outcome.rc

    def device(self, name: str, bootstrap: DeviceCert, workdir: str) -> MqttDevice:
        device = MqttDevice(DeviceConfig(
            name=name, site="north", library="gmqtt", port=self.broker.port, ca_file=self.server_ca,
            workdir=self.tmp_path / workdir, bootstrap_cert_file=bootstrap.cert_file,
            bootstrap_key_file=bootstrap.key_file, enrollment="server_keygen", telemetry_interval_s=0.2,
            request_timeout_s=20, enroll_attempts=1))
        self.devices.append(device)
        return device

    def last_refusal(self) -> str:
        """Why the last refused connection was closed: since the listener judges the certificate right after the
        TLS handshake, these refusals happen there, before any MQTT byte (no CONNACK)."""
        assert self.broker.broker is not None and self.broker.broker.tls_refusals
        return self.broker.broker.tls_refusals[-1].reason


@pytest.fixture
async def plant(engine: Engine, tmp_path: Path) -> AsyncIterator[Plant]:
    maker = Manufacturer.create("ACME Devices")
    # Imported before the broker starts: its listener trusts the manufacturer CA from the first handshake.
    engine.trustlists.import_external("mqtt-device", maker.ca_pem.encode(), list_name="trusted", note="ACME",
                                      actor=ACTOR)
    broker = EmbeddedBroker(engine, workdir=tmp_path / "broker", revocation_interval=0.1)
    await broker.start()
    server_ca = tmp_path / "server-ca.pem"
    server_ca.write_bytes(broker.server_ca_pem())
    owner = engine.registry.register(group="mqtt-device", name="enrollment-svc", site="north", actor=ACTOR,
                                     attributes={"role": "enrollment-service"})
    svc_cert = from_issued(engine.authority.issue_with_new_key(owner_id=owner.id, actor=ACTOR), owner, tmp_path / "svc")
    service = EnrollmentService(engine, host="127.0.0.1", port=broker.port, ca_file=server_ca,
                                cert_file=svc_cert.cert_file, key_file=svc_cert.key_file)
    result = Plant(engine, broker, maker, server_ca, tmp_path, [], [])
    try:
        await service.start()
        yield result
    finally:
        for device in result.devices:
            await device.stop()
        for client in result.clients:
            await asyncio.to_thread(client.close)
        await service.stop()
        await broker.stop()


async def test_a_forged_idevid_session_ends_when_the_device_is_pinned_and_is_refused_after(plant: Plant) -> None:
    engine = plant.engine
    genuine = plant.manufacturer.issue_idevid("SN-0001")
    forged = plant.idevid_files(plant.manufacturer.issue_idevid("SN-0001"), "forged")
    owner = engine.registry.register(group="mqtt-device", name="pump-1", site="north", actor=ACTOR,
                                     attributes={"bootstrap": [{"subject_cn": "SN-0001"}]})
    # Before the device ever enrolled, the forgery is as good as the genuine IDevID: it waits on the reply topic,
    # where a server-generated private key is delivered.
    lurker, rc = await plant.connect(forged, "pump-1")
    assert rc == 0
    assert await asyncio.to_thread(lurker.subscribe, "otpki/enroll/pump-1/+") == [1]

    # The genuine device enrolls elsewhere (the Mosquitto side, another process on the store): its pin ends the
    # forgery's session here, and the forgery cannot come back.
    await asyncio.to_thread(engine.bootstrap.enroll, owner_id=owner.id, credential=genuine.certificate_pem.encode(),
                            actor=ACTOR)
    await eventually(lurker.disconnected.is_set, "the forged IDevID's session to be closed", timeout=WAIT)
    _, rc = await plant.connect(forged, "pump-1")
    assert rc is None and plant.last_refusal() == "bootstrap_pinned"


async def test_the_pinned_idevid_enrolls_again_and_the_old_certificate_is_refused(plant: Plant) -> None:
    engine = plant.engine
    credential = plant.manufacturer.issue_idevid("SN-0003")
    genuine = plant.idevid_files(credential, "genuine")
    owner = engine.registry.register(group="mqtt-device", name="pump-3", site="north", actor=ACTOR,
                                     attributes={"bootstrap": [{"subject_cn": "SN-0003"}]})
    device = plant.device("pump-3", genuine, "pump-3")
    device.start()
    await asyncio.wait_for(device.online.wait(), WAIT)
    first = device.serial_hex
    assert first is not None

    # Factory reset: the device lost its operational identity and enrolls again with its own IDevID.
    await device.stop()
    reset = plant.device("pump-3", genuine, "pump-3-after-reset")
    reset.start()
    await asyncio.wait_for(reset.online.wait(), WAIT)
    second = reset.serial_hex
    assert second is not None and second != first
    old = engine.inventory.get(first)
    assert old.revocation_reason == RevocationReason.SUPERSEDED and old.superseded_by == second
    assert [c.serial for c in engine.inventory.query(owner_id=owner.id, status=CertificateStatus.ACTIVE)] == [second]
    # The old operational certificate (still on the old flash image) no longer gets in.
    await reset.stop()
    old_cert = DeviceCert(owner=None, certificate_der=b"", chain_der=[], key_pem=b"",
                          cert_file=device.config.operational_cert_file, key_file=device.config.operational_key_file)
    _, rc = await plant.connect(old_cert, "pump-3")
    assert rc is None and plant.last_refusal() == "revoked"
    pin = engine.bootstrap.pin(owner.id)
    assert pin is not None and pin.fingerprint_sha256 == credential.sha256 == sha256_hex(genuine.certificate_der)


async def test_after_rearm_a_new_idevid_enrolls(plant: Plant) -> None:
    engine = plant.engine
    old_part = plant.idevid_files(plant.manufacturer.issue_idevid("SN-0002"), "old-part")
    new_part = plant.idevid_files(plant.manufacturer.issue_idevid("SN-0002"), "new-part")  # re-issued, same CN
    owner = engine.registry.register(group="mqtt-device", name="pump-2", site="north", actor=ACTOR,
                                     attributes={"bootstrap": [{"subject_cn": "SN-0002"}]})
    device = plant.device("pump-2", old_part, "pump-2-old")
    device.start()
    await asyncio.wait_for(device.online.wait(), WAIT)
    await device.stop()

    _, rc = await plant.connect(new_part, "pump-2")
    assert rc is None and plant.last_refusal() == "bootstrap_pinned"
    engine.bootstrap.rearm(owner.id, actor="operator")
    replaced = plant.device("pump-2", new_part, "pump-2-new")
    replaced.start()
    await asyncio.wait_for(replaced.online.wait(), WAIT)
    assert replaced.state == DeviceState.ONLINE
    assert engine.inventory.get(device.serial_hex or "").revocation_reason == RevocationReason.SUPERSEDED
    _, rc = await plant.connect(old_part, "pump-2")
    assert rc is None and plant.last_refusal() == "bootstrap_pinned"
