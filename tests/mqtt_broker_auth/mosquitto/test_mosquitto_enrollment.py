"""First enrollment on otpki's bootstrap listener, life and renewal on a real Mosquitto kept in sync.

Mosquitto trusts the engine's CAs only (it takes a certificate's CN as the identity, whoever issued it), so
the manufacturer CA imported for bootstrap never reaches it. Devices enroll with their IDevID (or a factory
certificate allow-listed by SHA-256) on the bootstrap listener, otpki's embedded broker in bootstrap mode,
then connect to Mosquitto with the operational certificate and renew there. One EnrollmentService on each
broker. Probed with Mosquitto's own clients. One broker for the module (mosquitto_fixture.mosquitto_lab).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mqtt_broker_auth.embedded.broker import EmbeddedBroker
from mqtt_broker_auth.enrollment.service import EnrollmentService, EnrollmentSettings
from mqtt_broker_auth.mosquitto.sync import MosquittoSync
from simulators.manufacturer import BootstrapCredential, Manufacturer
from simulators.mqtt_device import DeviceConfig, DeviceState, MqttDevice
from tests.mqtt_broker_auth.conftest import DeviceCert, from_issued
from tests.mqtt_broker_auth.mosquitto import mosquitto_fixture
from tests.mqtt_broker_auth.mosquitto.mosquitto_fixture import ACTOR, GROUP, WAIT_S, MosquittoLab, PahoDevice, tls_alert
from trustlists.blocking import run_blocking
from trustlists.testing import eventually

mosquitto_lab = mosquitto_fixture.mosquitto_lab
paho_clients = mosquitto_fixture.paho_clients

SERVICE = "otpki-enrollment"


@pytest.fixture(scope="module")
def manufacturer(mosquitto_lab: MosquittoLab) -> Manufacturer:
    """The plant's operator steps: import the manufacturer CA and its CRL into the device group."""
    maker = Manufacturer.create("ACME Devices")
    trust = mosquitto_lab.engine.trustlists
    trust.import_external(GROUP, maker.ca_pem.encode(), list_name="trusted", note="ACME IDevID CA", actor=ACTOR)
    trust.import_external(GROUP, maker.crl_pem().encode(), list_name="trusted", note="ACME CRL", actor=ACTOR)
    return maker


class Plant:
    def __init__(self, lab: MosquittoLab, bootstrap: EmbeddedBroker, services: list[EnrollmentService],
                 service_cert: DeviceCert) -> None:
        self.lab = lab
        self.bootstrap = bootstrap
        self.services = services
        self.service_cert = service_cert


@pytest.fixture
async def plant(mosquitto_lab: MosquittoLab, manufacturer: Manufacturer, tmp_path: Path) -> AsyncIterator[Plant]:
    lab = mosquitto_lab
    owner = lab.engine.registry.find(GROUP, name=SERVICE) or lab.engine.registry.register(
        group=GROUP, name=SERVICE, site="north", actor=ACTOR, attributes={"role": "enrollment-service"})
    cert = from_issued(lab.engine.authority.issue_with_new_key(owner_id=owner.id, actor=ACTOR), owner,
                       tmp_path / "svc")
    report = await lab.sync.sync_once()  # the service's dynsec client
    assert report.refused is None, report
    bootstrap = EmbeddedBroker(lab.engine, workdir=tmp_path / "bootstrap", port=0, group=GROUP, mode="bootstrap")
    await bootstrap.start()
    services: list[EnrollmentService] = []
    try:
        for port in (lab.settings.port, bootstrap.port):
            svc = EnrollmentService(lab.engine, host="127.0.0.1", port=port, ca_file=lab.root_ca_file,
                                    cert_file=cert.cert_file, key_file=cert.key_file,
                                    settings=EnrollmentSettings(burst=20))
            await svc.start()
            services.append(svc)
        yield Plant(lab, bootstrap, services, cert)
    finally:
        for svc in services:
            await svc.stop()
        await bootstrap.stop()


def credential_cert(idevid: BootstrapCredential, directory: Path) -> DeviceCert:
    cert_file, key_file = idevid.write(directory)
    der = x509.load_pem_x509_certificate(idevid.certificate_pem.encode()).public_bytes(Encoding.DER)
    return DeviceCert(owner=None, certificate_der=der, chain_der=[], key_pem=idevid.key_pem.encode(),
                      cert_file=cert_file, key_file=key_file)


async def bootstrap_client(plant: Plant, cert: DeviceCert, *args: str, tool: str = "mosquitto_pub",
                           client_id: str | None = None) -> subprocess.CompletedProcess[str]:
    """Mosquitto's own command-line client against otpki's bootstrap listener (MQTT 3.1.1: amqtt), run off the
    event loop the listener serves on."""
    cmd = [tool, "-h", "127.0.0.1", "-p", str(plant.bootstrap.port), "--cafile", str(plant.lab.root_ca_file),
           "--cert", str(cert.cert_file), "--key", str(cert.key_file), "-V", "mqttv311", "-d", *args]
    if client_id:
        cmd += ["-i", client_id]
    return await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=WAIT_S, check=False)


async def test_idevid_enrolls_on_the_bootstrap_listener_then_lives_and_renews_on_mosquitto(
        plant: Plant, manufacturer: Manufacturer, tmp_path: Path, paho_clients: list[PahoDevice]) -> None:
    lab = plant.lab
    idevid = manufacturer.issue_idevid("SN-0001")
    owner = await run_blocking(lambda: lab.engine.registry.register(
        group=GROUP, name="pump-1", site="north", actor=ACTOR, attributes={"bootstrap": [idevid.allow_list_entry()]}))
    await lab.sync.sync_once()
    boot = credential_cert(idevid, tmp_path / "boot")

    # Mosquitto itself does not know the manufacturer at all.
    assert "unknown ca" in tls_alert(lab, boot)

    # On the bootstrap listener the IDevID is pump-1's bootstrap identity: its CSR topic and replies, nothing else.
    sub = await bootstrap_client(plant, boot, "-t", "plant/north/pump-1/cmd/#", "-E", tool="mosquitto_sub",
                           client_id="pump-1")
    assert "received SUBACK" in sub.stdout and "Subscribed (mid: 1): 128" in sub.stdout, sub.stdout + sub.stderr
    sub = await bootstrap_client(plant, boot, "-t", "otpki/enroll/pump-1/+", "-E", tool="mosquitto_sub",
                                 client_id="pump-1")
    assert "Subscribed (mid: 1): 0" in sub.stdout or "Subscribed (mid: 1): 1" in sub.stdout, sub.stdout + sub.stderr

    workdir = tmp_path / "pump-1"
    cert_file, key_file = idevid.write(workdir / "factory")
    device = MqttDevice(DeviceConfig(name="pump-1", site="north", port=lab.settings.port,
                                     bootstrap_port=plant.bootstrap.port, ca_file=lab.root_ca_file, workdir=workdir,
                                     bootstrap_cert_file=cert_file, bootstrap_key_file=key_file,
                                     telemetry_interval_s=0.5))
    device.start()
    try:
        await asyncio.wait_for(device.online.wait(), WAIT_S * 3)
        first = device.serial_hex
        assert first is not None and device.history[:3] == [DeviceState.NEW, DeviceState.ENROLLING,
                                                             DeviceState.CONNECTING]
        record = await run_blocking(lab.engine.inventory.get, first)
        assert record.owner_id == owner.id
        assert plant.services[1].counters["accepted"] == 1  # the first enrollment went to the bootstrap listener

        # Renewal over the operational session on Mosquitto.
        second = await device.renew_now(WAIT_S * 3)
        assert second != first
        assert (await run_blocking(lab.engine.inventory.get, first)).superseded_by == second
        assert plant.services[0].counters["accepted"] == 1
        await eventually(lambda: device.online.is_set() and device.serial_hex == second,
                         f"the device online with its renewed certificate {second}", timeout=WAIT_S)
    finally:
        await device.stop()

    # The operational certificate publishes its telemetry on Mosquitto, and nothing outside its topics.
    assert device.certificate is not None
    operational = DeviceCert(owner=owner, certificate_der=device.certificate.public_bytes(Encoding.DER),
                             chain_der=[], key_pem=b"", cert_file=device.config.operational_cert_file,
                             key_file=device.config.operational_key_file)
    dev = PahoDevice(lab, operational, client_id="pump-1")
    paho_clients.append(dev)
    dev.connect()
    assert dev.connack is not None and not dev.connack.is_failure, dev.connack
    assert not dev.publish("plant/north/pump-1/telemetry").is_failure
    assert dev.publish("plant/north/pump-2/telemetry").value == 135
    # ...and is no identity on the bootstrap listener, which admits bootstrap certificates and the service only.
    res = await bootstrap_client(plant, operational, "-t", "otpki/enroll/pump-1/csr", "-m", "x", client_id="pump-1")
    assert res.returncode != 0 and "received CONNACK (0)" not in res.stdout, res.stdout


async def test_factory_certificate_listed_by_sha256_enrolls_for_mosquitto(plant: Plant, tmp_path: Path) -> None:
    """Self-signed factory certificates cannot be expressed in Mosquitto (each would be a CA naming whoever it
    likes); the operator imports the certificate into the group's trust list (a TLS anchor for otpki's own
    listeners) and allow-lists it by fingerprint. It enrolls on the bootstrap listener; the device then lives
    on Mosquitto, which never sees the factory certificate."""
    lab = plant.lab
    factory = Manufacturer.factory_self_signed("FAC-0042")
    await run_blocking(lambda: lab.engine.trustlists.import_external(
        GROUP, factory.certificate_pem.encode(), list_name="trusted", note="FAC-0042 factory certificate",
        actor=ACTOR))
    await run_blocking(lambda: lab.engine.registry.register(
        group=GROUP, name="valve-42", site="north", actor=ACTOR,
        attributes={"bootstrap": [factory.allow_list_entry(by="sha256")]}))
    await lab.sync.sync_once()
    workdir = tmp_path / "valve-42"
    cert_file, key_file = factory.write(workdir / "factory")
    device = MqttDevice(DeviceConfig(name="valve-42", site="north", port=lab.settings.port,
                                     bootstrap_port=plant.bootstrap.port, ca_file=lab.root_ca_file, workdir=workdir,
                                     bootstrap_cert_file=cert_file, bootstrap_key_file=key_file,
                                     telemetry_interval_s=0.5, library="gmqtt"))
    device.start()
    try:
        await asyncio.wait_for(device.online.wait(), WAIT_S * 3)
        assert device.serial_hex is not None
        assert plant.services[1].counters["accepted"] == 1 and plant.services[0].counters["accepted"] == 0
    finally:
        await device.stop()
    # The same factory certificate straight at Mosquitto: no CA there issued it.
    assert "unknown ca" in tls_alert(lab, credential_cert(factory, tmp_path / "direct"))


async def test_manufacturer_certificates_on_the_bootstrap_listener_get_no_other_identity(
        plant: Plant, manufacturer: Manufacturer, tmp_path: Path, paho_clients: list[PahoDevice]) -> None:
    """Forged with the manufacturer key: CN = a registered device (not allow-listed), the service, the admin, an
    unregistered name. Each is refused by the bootstrap listener; the real device and service on Mosquitto and
    the service on the bootstrap listener stay connected."""
    lab = plant.lab
    real = await run_blocking(lab.device, "pump-77")
    await lab.sync.sync_once()
    online = PahoDevice(lab, real, client_id="pump-77")
    paho_clients.append(online)
    online.connect()
    assert online.connack is not None and not online.connack.is_failure

    for cn in ("pump-77", SERVICE, lab.settings.admin_username, "never-registered"):
        forged = credential_cert(manufacturer.issue_idevid(cn), tmp_path / cn)
        res = await bootstrap_client(plant, forged, "-t", f"otpki/enroll/{cn}/csr", "-m", "x", client_id=cn)
        assert res.returncode != 0 and "received CONNACK (0)" not in res.stdout, (cn, res.stdout, res.stderr)
        sub = await bootstrap_client(plant, forged, "-t", "otpki/enroll/+/csr", "-E", tool="mosquitto_sub",
                                     client_id=cn)
        assert sub.returncode != 0 and "received CONNACK (0)" not in sub.stdout, (cn, sub.stdout, sub.stderr)

    assert not online.disconnected.is_set()
    assert not online.publish("plant/north/pump-77/telemetry").is_failure
    assert all(s.serving.is_set() for s in plant.services)


async def test_a_failed_reload_is_retried_and_the_revoked_device_still_kicked(
        mosquitto_lab: MosquittoLab, paho_clients: list[PahoDevice]) -> None:
    lab = mosquitto_lab
    cert = await run_blocking(lab.device, "flaky-1")
    await lab.sync.sync_once()
    dev = PahoDevice(lab, cert, client_id="flaky-1")
    paho_clients.append(dev)
    dev.connect()
    assert dev.connack is not None and not dev.connack.is_failure, dev.connack

    calls: list[int] = []

    def flaky_reload() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("the broker did not take the signal")
        lab.process.hup()

    syncer = MosquittoSync(lab.engine, lab.settings, GROUP, reload=flaky_reload, dynsec=lab.sync._dynsec)
    await syncer.sync_once()  # files already in place: nothing to reload
    assert calls == []
    lab.revoke(cert)
    with pytest.raises(OSError):
        await syncer.sync_once()  # installed, but the broker was not told
    assert not dev.disconnected.is_set()
    report = await syncer.sync_once()  # retried: reload, then the kick measured against the old files
    assert calls == [1, 1] and report.files_installed and report.kicked == ["flaky-1"]
    assert dev.disconnected.wait(WAIT_S)
    assert (await syncer.sync_once()).kicked == []
