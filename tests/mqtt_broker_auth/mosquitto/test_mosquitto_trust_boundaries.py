"""Mosquitto honours a certificate's identity only when an engine CA of the group issued it.

Attacks from the holder of an imported manufacturer (IDevID) CA key, probed with Mosquitto's own clients
(`mosquitto_pub`, `mosquitto_sub`) and paho: certificates naming a registered device, the enrollment service,
the dynsec admin and an unregistered name. Then a broker-side attacker (someone who got the dynsec admin
password) plants clients, roles, ACLs and groups; the sync's reconcile removes all of it and says so.
One broker for the module (mosquitto_fixture.mosquitto_lab).
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mqtt_broker_auth.mosquitto import dynsec as ds
from mqtt_broker_auth.mosquitto import dynsec_state as ds_state
from mqtt_broker_auth.mosquitto.sync import FOREIGN_REMOVED_ACTION
from otpki.doctor import check_mosquitto_dynsec
from simulators.manufacturer import Manufacturer
from tests.mqtt_broker_auth.conftest import DeviceCert, write_cert_files
from tests.mqtt_broker_auth.mosquitto import mosquitto_fixture
from tests.mqtt_broker_auth.mosquitto.mosquitto_fixture import (
    ACTOR,
    GROUP,
    WAIT_S,
    MosquittoLab,
    PahoDevice,
    mosquitto_pub,
    tls_alert,
)
from trustlists.blocking import run_blocking
from trustlists.clock import utcnow
from trustlists.testing import ca_signing_material

mosquitto_lab = mosquitto_fixture.mosquitto_lab
paho_clients = mosquitto_fixture.paho_clients

SERVICE = "otpki-enrollment"


@pytest.fixture(scope="module")
def manufacturer(mosquitto_lab: MosquittoLab) -> Manufacturer:
    """The operator imported a manufacturer CA (and its CRL) into the device group, as for bootstrap."""
    maker = Manufacturer.create("ACME Devices")
    trust = mosquitto_lab.engine.trustlists
    trust.import_external(GROUP, maker.ca_pem.encode(), list_name="trusted", note="ACME IDevID CA", actor=ACTOR)
    trust.import_external(GROUP, maker.crl_pem().encode(), list_name="trusted", note="ACME CRL", actor=ACTOR)
    return maker


def forged(maker: Manufacturer, cn: str, directory: Path) -> DeviceCert:
    """What anyone holding the manufacturer CA key can make: any CN, clientAuth, the CA alongside."""
    idevid = maker.issue_idevid(cn)
    cert_file, key_file = idevid.write(directory / cn)
    der = x509.load_pem_x509_certificate(idevid.certificate_pem.encode()).public_bytes(serialization.Encoding.DER)
    return DeviceCert(owner=None, certificate_der=der, chain_der=[], key_pem=idevid.key_pem.encode(),
                      cert_file=cert_file, key_file=key_file)


def connect(lab: MosquittoLab, clients: list[PahoDevice], cert: DeviceCert, client_id: str) -> PahoDevice:
    dev = PahoDevice(lab, cert, client_id=client_id, protocol=mqtt.MQTTv311)
    clients.append(dev)
    dev.connect()
    assert dev.connack is not None and not dev.connack.is_failure, dev.connack
    return dev


def pub_refused(res: subprocess.CompletedProcess[str]) -> bool:
    return res.returncode != 0 and "received CONNACK" not in res.stdout


async def test_manufacturer_ca_certificates_are_no_identity_on_any_mosquitto_listener(
        mosquitto_lab: MosquittoLab, manufacturer: Manufacturer, tmp_path: Path,
        paho_clients: list[PahoDevice]) -> None:
    lab = mosquitto_lab
    device = await run_blocking(lab.device, "pump-7")
    service = await run_blocking(lab.device, SERVICE, attributes={"role": "enrollment-service"})
    report = await lab.sync.sync_once()
    assert report.refused is None, report

    # The broker trusts the engine's CAs only: the imported manufacturer CA is in the trust list, not in cafile.
    installed = x509.load_pem_x509_certificates(lab.settings.cafile.read_bytes())
    assert manufacturer.certificate.subject not in {c.subject for c in installed}
    assert len(lab.engine.trustlists.get(GROUP).content.trusted_certificates) > len(
        lab.engine.trustlists.get(GROUP, imported=False).content.trusted_certificates)

    # The real device and the real service are online; the service sees the device's CSR topic.
    real_service = connect(lab, paho_clients, service, SERVICE)
    assert not real_service.subscribe("otpki/enroll/+/csr").is_failure
    real_device = connect(lab, paho_clients, device, "pump-7")

    for cn in ("pump-7", SERVICE, lab.settings.admin_username, "never-registered"):
        attacker = forged(manufacturer, cn, tmp_path)
        assert "unknown ca" in tls_alert(lab, attacker), cn
        res = mosquitto_pub(lab, attacker, f"plant/north/{cn}/telemetry", client_id=cn)
        assert pub_refused(res), (cn, res.stdout, res.stderr)
        sub = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(lab.settings.port), "--cafile",
                              str(lab.root_ca_file), "--cert", str(attacker.cert_file), "--key",
                              str(attacker.key_file), "-V", "mqttv311", "-i", cn, "-t", "otpki/enroll/+/csr",
                              "-E", "-d"], capture_output=True, text=True, timeout=WAIT_S, check=False)
        assert sub.returncode != 0 and "received CONNACK" not in sub.stdout, (cn, sub.stdout, sub.stderr)

    # The admin listener takes passwords only: the admin name without its password gets nowhere either.
    admin = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(lab.settings.admin_port), "-u",
                            lab.settings.admin_username, "-P", "guess", "-V", "mqttv311", "-t", "$CONTROL/#", "-E",
                            "-d"], capture_output=True, text=True, timeout=WAIT_S, check=False)
    assert admin.returncode != 0 and "received CONNACK (5)" in admin.stdout, admin.stdout

    # Nobody was kicked: both still publish and receive.
    assert not real_device.disconnected.is_set() and not real_service.disconnected.is_set()
    assert not real_device.publish("otpki/enroll/pump-7/csr", "still-me").is_failure
    msg = real_service.next_message()
    assert msg is not None and msg.payload == b"still-me"
    assert not real_device.disconnected.is_set() and not real_service.disconnected.is_set()


async def test_another_groups_engine_ca_is_no_identity_either(mosquitto_lab: MosquittoLab, tmp_path: Path) -> None:
    """A clientAuth certificate naming a device, signed by the engine's broker-group CA (a mis-issuance in
    another group) and presented with that CA: the root is in cafile, but the issuer is not the device group's."""
    lab = mosquitto_lab
    await run_blocking(lab.device, "pump-8")
    await lab.sync.sync_once()
    broker_ca = next(ca for ca in lab.engine.hierarchy.list() if ca.group == "mqtt-broker" and ca.active)
    _cert, signer = ca_signing_material(lab.engine, broker_ca)
    issuer = x509.load_der_x509_certificate(broker_ca.certificate_der)
    key = ec.generate_private_key(ec.SECP256R1())
    now = utcnow()
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pump-8")]))
            .issuer_name(issuer.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(issuer.not_valid_after_utc)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(signer, hashes.SHA256()))  # type: ignore[arg-type]
    der = cert.public_bytes(serialization.Encoding.DER)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    cert_file, key_file = write_cert_files(tmp_path, "pump-8", der, [broker_ca.certificate_der], key_pem)
    rogue = DeviceCert(owner=None, certificate_der=der, chain_der=[broker_ca.certificate_der], key_pem=key_pem,
                       cert_file=cert_file, key_file=key_file)
    assert "unable to get certificate CRL" in tls_alert(lab, rogue) or "unknown ca" in tls_alert(lab, rogue)
    assert pub_refused(mosquitto_pub(lab, rogue, "plant/north/pump-8/telemetry", client_id="pump-8"))


async def test_reconcile_removes_everything_the_engine_did_not_put_there(
        mosquitto_lab: MosquittoLab, paho_clients: list[PahoDevice]) -> None:
    lab = mosquitto_lab
    device = await run_blocking(lab.device, "pump-9")
    await lab.sync.sync_once(full=True)
    admin = await lab.sync._client()

    # What someone with the admin password (or a former hole) leaves behind.
    wide = ds.Acl(acltype="publishClientSend", topic="#")
    await admin.aexecute([
        ds.create_role("backdoor"), ds.add_role_acl("backdoor", wide),
        ds.create_client("intruder", roles=["backdoor"], password="x"),
        ds.add_client_role("pump-9", "backdoor"),
        ds.add_role_acl(ds.role_name("pump-9"), ds.Acl(acltype="subscribePattern", topic="#")),
        {"command": "createGroup", "groupname": "crew"}, {"command": "addGroupRole", "groupname": "crew",
                                                          "rolename": "backdoor"},
        {"command": "addGroupClient", "groupname": "crew", "username": "pump-9"},
        {"command": "setAnonymousGroup", "groupname": "crew"},
        ds.set_default_acl_access(publish_send=True, subscribe=True),
    ])
    # Changing the admin's own roles makes dynsec drop the admin connection that sent the command.
    with pytest.raises(ds.DynsecUnavailable):
        await admin.aexecute([ds.add_client_role(lab.settings.admin_username, "backdoor")])
    await lab.sync._drop_client()

    # `otpki doctor` reads what Mosquitto saved and names every foreign entry before the sync has run.
    doctor = await run_blocking(lambda: list(check_mosquitto_dynsec(
        lab.engine, dynsec_file=lab.settings.dynsec_file, admin_username=lab.settings.admin_username, group=GROUP)))
    failures = "\n".join(f.detail for f in doctor if f.level == "fail")
    for needle in ("client 'intruder'", "role 'backdoor'", "group 'crew'", "default acl"):
        assert needle in failures, (needle, failures)

    report = await lab.sync.sync_once(full=True)
    removed = "\n".join(report.foreign_removed)
    for needle in ("client intruder", "role backdoor", "client_role pump-9", "client_role " +
                   lab.settings.admin_username, "acl " + ds.role_name("pump-9"), "group crew",
                   "anonymous_group crew", "default_acl"):
        assert needle in removed, (needle, removed)
    assert lab.process.running(), "the broker must survive the clean-up (deleting the anonymous group crashes it)"

    admin = await lab.sync._client()
    responses = await admin.aexecute(ds_state.state_queries())
    state = ds_state.DynsecState.from_responses(*responses)
    desired, once = await run_blocking(lab.sync.desired)
    assert ds_state.drift(state, desired, once_managed=once) == []
    assert set(state.groups) <= {ds_state.PARKING_GROUP} and not any(state.groups.values())

    # Said in the audit log (what `otpki doctor` reads), and nothing more on the next round.
    events = await run_blocking(lab.engine.audit_records, action=FOREIGN_REMOVED_ACTION)
    assert events and any(r["name"] == "intruder" for r in events[-1].details["removed"])
    assert (await lab.sync.sync_once(full=True)).foreign_removed == []
    doctor = await run_blocking(lambda: list(check_mosquitto_dynsec(
        lab.engine, dynsec_file=lab.settings.dynsec_file, admin_username=lab.settings.admin_username, group=GROUP)))
    assert not [f for f in doctor if f.level == "fail"], doctor
    assert any(f.level == "warn" and "removed foreign dynsec entries" in f.detail and "intruder" in f.detail
               for f in doctor), doctor

    # The device keeps exactly its own rights.
    dev = PahoDevice(lab, device, client_id="pump-9", protocol=mqtt.MQTTv5)
    paho_clients.append(dev)
    dev.connect()
    assert not dev.publish("plant/north/pump-9/telemetry").is_failure
    assert dev.publish("plant/north/pump-1/telemetry").value == 135
    assert dev.subscribe("#").is_failure


async def test_reconcile_runs_in_the_sync_loop(mosquitto_lab: MosquittoLab) -> None:
    """The periodic full reconcile, not only an explicit one, removes a role planted while the loop runs."""
    lab = mosquitto_lab
    admin = await lab.sync._client()
    runner = asyncio.create_task(lab.sync.run())
    try:
        await admin.aexecute([ds.create_role("planted")])
        lab.sync._last_full = float("-inf")  # the next round is a periodic full one (30 s apart by default)
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while True:
            [listing] = await admin.aexecute([ds.list_roles()])
            if "planted" not in {r.get("rolename") if isinstance(r, dict) else r
                                 for r in listing["data"]["roles"]}:
                break
            assert asyncio.get_running_loop().time() < deadline, "the sync loop did not remove the planted role"
            await asyncio.sleep(0.05)
    finally:
        lab.sync.stop()
        await runner
    events = await run_blocking(lab.engine.audit_records, action=FOREIGN_REMOVED_ACTION)
    assert any(r["name"] == "planted" for r in events[-1].details["removed"])
