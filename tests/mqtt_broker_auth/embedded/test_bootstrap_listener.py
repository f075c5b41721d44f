"""The embedded broker as a bootstrap-only listener: IDevIDs enroll there, nothing operational gets in but the
enrollment service. Real broker, real TLS, paho clients, the real EnrollmentService and the device simulator.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mqtt_broker_auth.embedded.broker import EmbeddedBroker
from mqtt_broker_auth.enrollment.service import EnrollmentService, EnrollmentSettings
from simulators.manufacturer import Manufacturer
from simulators.mqtt_device import DeviceConfig, MqttDevice
from tests.mqtt_broker_auth.conftest import ACTOR, DeviceCert, issue_device
from tests.mqtt_broker_auth.embedded import test_amqtt_broker as amqtt_tests
from tests.mqtt_broker_auth.embedded.test_amqtt_broker import Client, connect, connected, refused_with
from trustlists.engine import Engine

WAIT = amqtt_tests.WAIT
clients = amqtt_tests.clients


def credential_files(cred_pem: str, key_pem: str, directory: Path, name: str) -> DeviceCert:
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_text(cred_pem)
    key_file.write_text(key_pem)
    key_file.chmod(0o600)
    der = x509.load_pem_x509_certificate(cred_pem.encode()).public_bytes(Encoding.DER)
    return DeviceCert(owner=None, certificate_der=der, chain_der=[], key_pem=key_pem.encode(), cert_file=cert_file,
                      key_file=key_file)


async def test_bootstrap_listener_admits_only_bootstrap_identities_and_the_enrollment_service(
        engine: Engine, tmp_path: Path, clients: list[Client], caplog: pytest.LogCaptureFixture) -> None:
    maker = Manufacturer.create("ACME Devices")
    engine.trustlists.import_external("mqtt-device", maker.ca_pem.encode(), list_name="trusted", note="ACME",
                                      actor=ACTOR)
    idevid = maker.issue_idevid("SN-0001")
    owner = engine.registry.register(group="mqtt-device", name="valve-1", site="north", actor=ACTOR,
                                     attributes={"bootstrap": [idevid.allow_list_entry()]})
    certs = tmp_path / "certs"
    pump = issue_device(engine, "pump-7", certs)  # a registered device with its operational certificate
    service_cert = issue_device(engine, "otpki-enrollment", certs, attributes={"role": "enrollment-service"})
    observer = issue_device(engine, "enroll-observer", certs, attributes={"role": "enrollment-service"})

    broker = EmbeddedBroker(engine, workdir=tmp_path / "bootstrap-broker", mode="bootstrap", revocation_interval=0.1)
    await broker.start()
    service: EnrollmentService | None = None
    try:
        server_ca = tmp_path / "server-ca.pem"
        server_ca.write_bytes(broker.server_ca_pem())

        # A registered device's operational certificate: authenticated, but refused at CONNECT, and logged.
        with caplog.at_level(logging.WARNING, logger="mqtt_broker_auth"):
            _, outcome = await connect(clients, broker, server_ca, pump, "pump-7")
        refused_with(broker, outcome, "not_on_bootstrap_listener")
        assert "not_on_bootstrap_listener" in caplog.text and "'pump-7'" in caplog.text

        # The enrollment service connects and subscribes to every device's CSR topic.
        service = EnrollmentService(engine, host="127.0.0.1", port=broker.port, ca_file=server_ca,
                                    cert_file=service_cert.cert_file, key_file=service_cert.key_file,
                                    settings=EnrollmentSettings())
        await service.start()
        watcher = await connected(clients, broker, server_ca, observer, "enroll-observer")
        assert await asyncio.to_thread(watcher.subscribe, "otpki/enroll/+/csr") == [1]

        # The IDevID: its own enrollment topics and nothing else.
        boot_cert = credential_files(idevid.cert_file_pem, idevid.key_pem, tmp_path / "factory", "SN-0001")
        boot = await connected(clients, broker, server_ca, boot_cert, "valve-1")
        assert await asyncio.to_thread(boot.subscribe, "otpki/enroll/valve-1/+", "plant/north/valve-1/cmd/#",
                                       "otpki/enroll/+/csr", "#") == [1, 0x80, 0x80, 0x80]
        for topic in ("otpki/enroll/pump-7/csr", "plant/north/valve-1/telemetry", "otpki/enroll/valve-1/accepted"):
            await asyncio.to_thread(boot.publish, topic, b"dropped")
        await asyncio.to_thread(boot.publish, "otpki/enroll/valve-1/csr", b"not json")
        assert await asyncio.to_thread(watcher.next_message) == ("otpki/enroll/valve-1/csr", b"not json")
        # valve-1 hears its own request and the service's answer, nothing it published elsewhere.
        heard = {(await asyncio.to_thread(boot.next_message))[0] for _ in range(2)}
        assert heard == {"otpki/enroll/valve-1/csr", "otpki/enroll/valve-1/rejected"}
        assert watcher.messages.empty() and boot.messages.empty()
        boot.close()

        # The device enrolls over this listener with the simulator's own client.
        workdir = tmp_path / "valve-1"
        cert_file, key_file = idevid.write(workdir / "factory")
        device = MqttDevice(DeviceConfig(name="valve-1", site="north", port=broker.port, ca_file=server_ca,
                                         workdir=workdir, bootstrap_cert_file=cert_file, bootstrap_key_file=key_file))
        await asyncio.wait_for(device.enroll(), WAIT * 2)
        assert service.counters["accepted"] == 1 and device.serial_hex is not None
        assert (await asyncio.to_thread(engine.inventory.get, device.serial_hex)).owner_id == owner.id

        # Its new operational certificate belongs on the device listener, not here.
        operational = credential_files(device.config.operational_cert_file.read_text(),
                                       device.config.operational_key_file.read_text(), tmp_path / "op", "valve-1")
        _, outcome = await connect(clients, broker, server_ca, operational, "valve-1")
        refused_with(broker, outcome, "not_on_bootstrap_listener")
    finally:
        if service is not None:
            await service.stop()
        await broker.stop()


def test_bootstrap_mode_refuses_replaced_plugins(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bootstrap"):
        EmbeddedBroker(engine, workdir=tmp_path / "b", mode="bootstrap", plugins={})
