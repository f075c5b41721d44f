"""First enrollment with a manufacturer IDevID, and renewal, over a real Mosquitto kept in sync with the engine.

The manufacturer CA goes into the device group's trust list with its CRL (Mosquitto refuses leaves of a CA
without one). MosquittoSync gives each allow-listed IDevID CN a dynsec client holding only its device's
enrollment topics; the EnrollmentService, connected to the same broker with its own engine certificate, judges
each request itself. One broker for the module (mosquitto_fixture.mosquitto_lab).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mqtt_broker_auth.enrollment import EnrollmentService, EnrollmentSettings
from mqtt_broker_auth.mosquitto import dynsec as ds
from mqtt_broker_auth.mosquitto.sync import MosquittoSync
from simulators.manufacturer import BootstrapCredential, Manufacturer
from simulators.mqtt_device import DeviceConfig, DeviceState, MqttDevice
from tests.mqtt_broker_auth import mosquitto_fixture
from tests.mqtt_broker_auth.conftest import DeviceCert, from_issued
from tests.mqtt_broker_auth.mosquitto_fixture import ACTOR, GROUP, WAIT_S, MosquittoLab, PahoDevice
from trustlists.blocking import run_blocking

mosquitto_lab = mosquitto_fixture.mosquitto_lab
paho_clients = mosquitto_fixture.paho_clients


@pytest.fixture(scope="module")
def manufacturer(mosquitto_lab: MosquittoLab) -> Manufacturer:
    """The plant's operator steps: import the manufacturer CA and its CRL into the device group."""
    maker = Manufacturer.create("ACME Devices")
    trust = mosquitto_lab.engine.trustlists
    trust.import_external(GROUP, maker.ca_pem.encode(), list_name="trusted", note="ACME IDevID CA", actor=ACTOR)
    trust.import_external(GROUP, maker.crl_pem().encode(), list_name="trusted", note="ACME CRL", actor=ACTOR)
    return maker


@pytest.fixture
async def service(mosquitto_lab: MosquittoLab, manufacturer: Manufacturer,
                  tmp_path: Path) -> AsyncIterator[EnrollmentService]:
    lab = mosquitto_lab
    owner = lab.engine.registry.find(GROUP, name="otpki-enrollment") or lab.engine.registry.register(
        group=GROUP, name="otpki-enrollment", site="north", actor=ACTOR, attributes={"role": "enrollment-service"})
    cert = from_issued(lab.engine.authority.issue_with_new_key(owner_id=owner.id, actor=ACTOR), owner,
                       tmp_path / "svc")
    report = await lab.sync.sync_once()  # installs the manufacturer CA + CRL, creates the service's client
    assert report.refused is None, report
    svc = EnrollmentService(lab.engine, host="127.0.0.1", port=lab.settings.port, ca_file=lab.root_ca_file,
                            cert_file=cert.cert_file, key_file=cert.key_file,
                            settings=EnrollmentSettings(burst=20))
    await svc.start()
    yield svc
    await svc.stop()


def bootstrap_cert(idevid: BootstrapCredential, directory: Path) -> DeviceCert:
    cert_file, key_file = idevid.write(directory)
    der = x509.load_pem_x509_certificate(idevid.certificate_pem.encode()).public_bytes(Encoding.DER)
    return DeviceCert(owner=None, certificate_der=der, chain_der=[], key_pem=idevid.key_pem.encode(),
                      cert_file=cert_file, key_file=key_file)


async def test_idevid_enrolls_connects_publishes_and_renews_through_mosquitto(
        mosquitto_lab: MosquittoLab, manufacturer: Manufacturer, service: EnrollmentService, tmp_path: Path,
        paho_clients: list[PahoDevice]) -> None:
    lab = mosquitto_lab
    idevid = manufacturer.issue_idevid("SN-0001")
    owner = lab.engine.registry.register(group=GROUP, name="pump-1", site="north", actor=ACTOR,
                                         attributes={"bootstrap": [idevid.allow_list_entry()]})
    # A second device whose allow-list names pump-1: that IDevID would be pump-1 to Mosquitto's ACLs.
    lab.engine.registry.register(group=GROUP, name="pump-2", site="north", actor=ACTOR,
                                 attributes={"bootstrap": [{"subject_cn": "pump-1"}]})
    report = await lab.sync.sync_once()
    assert "SN-0001" in report.created and "pump-1" in report.created
    assert report.skipped_bootstrap == {"pump-1": "bootstrap_cn_is_registered_name"}

    # pump-1's client is the device's own, holding the device's role only (no bootstrap role was added).
    client = await lab.sync._client()
    [got] = await client.aexecute([ds.get_client("pump-1")])
    assert [r["rolename"] for r in got["data"]["client"]["roles"]] == [ds.role_name("pump-1")]
    [role] = await client.aexecute([ds.get_role(ds.role_name("SN-0001"))])
    assert {(a["acltype"], a["topic"]) for a in role["data"]["role"]["acls"]} == {
        ("publishClientSend", "otpki/enroll/pump-1/csr"), ("subscribePattern", "otpki/enroll/pump-1/+"),
        ("publishClientReceive", "otpki/enroll/pump-1/+")}

    # The IDevID on the broker: its enrollment replies yes, telemetry and other devices' topics no.
    boot = PahoDevice(lab, bootstrap_cert(idevid, tmp_path / "boot"), client_id="SN-0001")
    paho_clients.append(boot)
    boot.connect()
    assert boot.connack is not None and not boot.connack.is_failure, boot.connack
    assert not boot.subscribe("otpki/enroll/pump-1/+").is_failure
    assert boot.subscribe("plant/north/pump-1/cmd/#").is_failure
    assert boot.publish("plant/north/pump-1/telemetry").value == 135  # not authorized
    assert boot.publish("otpki/enroll/pump-2/csr").value == 135
    boot.close()

    # The device: enroll with the IDevID, then online with its operational certificate.
    workdir = tmp_path / "pump-1"
    cert_file, key_file = idevid.write(workdir / "factory")
    device = MqttDevice(DeviceConfig(name="pump-1", site="north", port=lab.settings.port, ca_file=lab.root_ca_file,
                                     workdir=workdir, bootstrap_cert_file=cert_file, bootstrap_key_file=key_file,
                                     telemetry_interval_s=0.5))
    device.start()
    try:
        await asyncio.wait_for(device.online.wait(), WAIT_S * 3)
        first = device.serial_hex
        assert first is not None and device.history[:3] == [DeviceState.NEW, DeviceState.ENROLLING,
                                                             DeviceState.CONNECTING]
        record = await run_blocking(lab.engine.inventory.get, first)
        assert record.owner_id == owner.id

        # Renewal over the operational session: a new serial for the same owner.
        second = await device.renew_now(WAIT_S * 3)
        assert second != first
        renewed = await run_blocking(lab.engine.inventory.get, second)
        assert renewed.owner_id == owner.id
        assert (await run_blocking(lab.engine.inventory.get, first)).superseded_by == second
        for _ in range(int(WAIT_S / 0.05)):
            if device.online.is_set() and device.serial_hex == second:
                break
            await asyncio.sleep(0.05)
        assert device.online.is_set() and device.serial_hex == second, device.state
    finally:
        await device.stop()
    assert service.counters["accepted"] == 2

    # The operational certificate publishes telemetry (PUBACK without error), and nothing outside its topics.
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


async def test_removing_the_allow_list_entry_removes_the_bootstrap_client(mosquitto_lab: MosquittoLab,
                                                                          manufacturer: Manufacturer) -> None:
    lab = mosquitto_lab
    idevid = manufacturer.issue_idevid("SN-0009")
    owner = lab.engine.registry.register(group=GROUP, name="valve-9", site="north", actor=ACTOR,
                                         attributes={"bootstrap": [idevid.allow_list_entry(),
                                                                   {"sha256": idevid.sha256}]})
    report = await lab.sync.sync_once()
    assert "SN-0009" in report.created
    lab.engine.registry.unregister(owner.id, actor=ACTOR)
    report = await lab.sync.sync_once()
    assert {"SN-0009", "valve-9"} <= set(report.deleted)


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
