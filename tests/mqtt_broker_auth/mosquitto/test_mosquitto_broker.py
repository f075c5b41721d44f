"""Mosquitto with otpki's config, files and dynsec sync, probed by independent clients over real mTLS.

One broker for the module (mosquitto_fixture.mosquitto_lab). The last test revokes the device group's
issuing CA, so it must stay last.
"""

from __future__ import annotations

import asyncio
import subprocess
from datetime import timedelta

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from mqtt_broker_auth.mosquitto.files import UnsafeTrustFiles, install_trust_files
from mqtt_broker_auth.mosquitto.process import hup_from_pid_file
from mqtt_broker_auth.mosquitto.sync import MosquittoSync
from tests.mqtt_broker_auth.conftest import DeviceCert, make_external_ca, make_external_leaf
from tests.mqtt_broker_auth.mosquitto import mosquitto_fixture
from tests.mqtt_broker_auth.mosquitto.mosquitto_fixture import (
    GROUP,
    WAIT_S,
    MosquittoLab,
    PahoDevice,
    mosquitto_pub,
    tls_alert,
)
from trustlists.blocking import run_blocking
from trustlists.clock import utcnow
from trustlists.engine import Engine
from trustlists.keys.files import EncryptedFileKeyBackend
from trustlists.keys.keyring import KeyRing
from trustlists.models import RevocationReason
from trustlists.store import SqliteStore
from trustlists.testing import PASSPHRASE, ca_signing_material, wait_until

# The fixtures live in their own module (conftest.py belongs to another part of the suite).
mosquitto_lab = mosquitto_fixture.mosquitto_lab
paho_clients = mosquitto_fixture.paho_clients


def refused(res: subprocess.CompletedProcess[str]) -> bool:
    """mosquitto_pub got no CONNACK. Its error text races the alert (sometimes just "Protocol error"), so the
    alert itself is asserted with `tls_alert`."""
    return res.returncode != 0 and "received CONNACK" not in res.stdout


async def devices(lab: MosquittoLab, *names: str, **kwargs: object) -> list[DeviceCert]:
    """Register and issue devices, then let the sync create their dynsec clients."""
    certs = [await run_blocking(lab.device, name, **kwargs) for name in names]  # type: ignore[arg-type]
    await lab.sync.sync_once()
    return certs


def connect(lab: MosquittoLab, clients: list[PahoDevice], cert: DeviceCert | None, **kwargs: object) -> PahoDevice:
    dev = PahoDevice(lab, cert, **kwargs)  # type: ignore[arg-type]
    clients.append(dev)
    dev.connect()
    assert dev.connack is not None and not dev.connack.is_failure, dev.connack
    return dev


# -- admit -------------------------------------------------------------------------------------------
async def test_valid_device_connects_and_publishes_with_debian_clients(mosquitto_lab: MosquittoLab,
                                                                        paho_clients: list[PahoDevice]) -> None:
    lab = mosquitto_lab
    (dev,) = await devices(lab, "dev-ok")
    (svc,) = await devices(lab, "enroll-svc", attributes={"role": "enrollment-service"})
    # The enrollment service is an independent observer: it may read every device's CSR topic.
    observer = connect(lab, paho_clients, svc)
    assert not observer.subscribe("otpki/enroll/+/csr").is_failure

    res = mosquitto_pub(lab, dev, lab.topic("dev-ok"), "21.5")
    assert res.returncode == 0, res.stderr
    assert "received CONNACK (0)" in res.stdout and "PUBACK (Mid: 1, RC:0)" in res.stdout
    res = mosquitto_pub(lab, dev, "otpki/enroll/dev-ok/csr", "csr-please")
    assert res.returncode == 0, res.stderr
    msg = observer.next_message()
    assert msg is not None and msg.topic == "otpki/enroll/dev-ok/csr" and msg.payload == b"csr-please"
    # Username and client id are the certificate CN, whatever the client sent.
    assert "as dev-ok (p2, c1, k60, u'dev-ok')" in lab.log_text()

    res = await asyncio.create_subprocess_exec(
        "mosquitto_sub", "-h", "127.0.0.1", "-p", str(lab.settings.port), "--cafile", str(lab.root_ca_file),
        "--cert", str(dev.cert_file), "--key", str(dev.key_file), "-V", "mqttv311", "-d", "-E", "-q", "1",
        "-t", "plant/north/dev-ok/cmd/#", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(res.communicate(), WAIT_S)
    assert res.returncode == 0, err
    assert "received SUBACK" in out.decode() and "Subscribed (mid: 1): 1" in out.decode()


# -- refuse ------------------------------------------------------------------------------------------
async def test_expired_certificate_refused(mosquitto_lab: MosquittoLab) -> None:
    lab = mosquitto_lab
    assert "certificate expired" in tls_alert(lab, lab.expired)
    res = mosquitto_pub(lab, lab.expired, lab.topic("dev-expired"))
    assert refused(res)


async def test_revoked_certificate_refused(mosquitto_lab: MosquittoLab) -> None:
    lab = mosquitto_lab
    (dev,) = await devices(lab, "dev-revoked")
    assert mosquitto_pub(lab, dev, lab.topic("dev-revoked")).returncode == 0
    await run_blocking(lab.revoke, dev)
    report = await lab.sync.sync_once()
    assert report.files_installed and report.refused is None
    assert "certificate revoked" in tls_alert(lab, dev)
    res = mosquitto_pub(lab, dev, lab.topic("dev-revoked"))
    assert refused(res)


async def test_untrusted_ca_refused(mosquitto_lab: MosquittoLab) -> None:
    lab = mosquitto_lab
    # Same CN as a registered device, but from a CA the engine does not trust.
    rogue = make_external_leaf(lab.certs_dir / "rogue", "dev-ok", ca=make_external_ca("Rogue CA"))
    assert "unknown ca" in tls_alert(lab, rogue)
    assert refused(mosquitto_pub(lab, rogue, lab.topic("dev-ok")))


async def test_no_certificate_refused(mosquitto_lab: MosquittoLab) -> None:
    lab = mosquitto_lab
    assert "certificate required" in tls_alert(lab, None)
    assert refused(mosquitto_pub(lab, None, lab.topic("dev-ok")))


# -- identity and ACLs -----------------------------------------------------------------------------------
async def test_client_id_of_another_device_is_replaced_and_cannot_kick_the_victim(
        mosquitto_lab: MosquittoLab, paho_clients: list[PahoDevice]) -> None:
    lab = mosquitto_lab
    victim_cert, attacker_cert = await devices(lab, "dev-victim", "dev-attacker")
    victim = connect(lab, paho_clients, victim_cert, client_id="dev-victim")
    assert not victim.subscribe("plant/north/dev-victim/cmd/#").is_failure

    res = mosquitto_pub(lab, attacker_cert, lab.topic("dev-attacker"), client_id="dev-victim")
    assert res.returncode == 0, res.stderr
    attacker = connect(lab, paho_clients, attacker_cert, client_id="dev-victim")
    log = lab.log_text()
    # Both connections were renamed to the attacker's own identity (p2 = MQTT 3.1.1, p5 = MQTT 5).
    assert "as dev-attacker (p2, c1, k60, u'dev-attacker')" in log
    assert "as dev-attacker (p5, c1, k30, u'dev-attacker')" in log

    # The victim's session survived both: it is still connected and still receives.
    assert attacker.publish("plant/north/dev-victim/cmd/stop").value == 135  # Not authorized
    assert not victim.publish("plant/north/dev-victim/cmd/ping", "alive").is_failure
    msg = victim.next_message()
    assert msg is not None and msg.payload == b"alive"
    assert not victim.disconnected.is_set()


async def test_acl_own_topic_allowed_other_device_topic_denied(mosquitto_lab: MosquittoLab,
                                                                paho_clients: list[PahoDevice]) -> None:
    lab = mosquitto_lab
    own_cert, other_cert = await devices(lab, "dev-acl", "dev-neighbour")
    v5 = connect(lab, paho_clients, own_cert)
    ack = v5.publish(lab.topic("dev-acl"))
    assert not ack.is_failure  # Success or "No matching subscribers"
    ack = v5.publish(lab.topic("dev-neighbour"))
    assert ack.value == 135  # Not authorized
    assert v5.publish("plant/south/dev-acl/telemetry").value == 135  # another site's template value
    assert v5.subscribe("plant/north/dev-neighbour/cmd/#").value == 135
    assert v5.subscribe("plant/#").value == 135
    assert not v5.subscribe("plant/north/dev-acl/cmd/#").is_failure
    v5.close()

    # MQTT 3.1.1 has no negative PUBACK: the denied message is simply never delivered.
    neighbour = connect(lab, paho_clients, other_cert)
    assert not neighbour.subscribe("plant/north/dev-neighbour/cmd/#").is_failure
    v311 = connect(lab, paho_clients, own_cert, protocol=mqtt.MQTTv311)
    v311.publish("plant/north/dev-neighbour/cmd/open-valve", "evil")  # PUBACK arrives, message dropped
    neighbour.publish("plant/north/dev-neighbour/cmd/marker", "marker")
    msg = neighbour.next_message()
    assert msg is not None and msg.payload == b"marker", "the denied message reached the neighbour"


# -- live revocation -------------------------------------------------------------------------------------
async def test_revoke_while_connected_kicks_and_reconnect_is_refused(mosquitto_lab: MosquittoLab,
                                                                      paho_clients: list[PahoDevice]) -> None:
    lab = mosquitto_lab
    (cert,) = await devices(lab, "dev-live")
    dev = connect(lab, paho_clients, cert)
    assert not dev.subscribe("plant/north/dev-live/cmd/#").is_failure

    task = asyncio.create_task(lab.sync.run())
    try:
        # Revoked by another process on the same database (as `otpki certs revoke` does).
        def revoke_elsewhere() -> None:
            other = Engine(store=SqliteStore(lab.pki_dir / "otpki.db"), config=lab.engine.config,
                           keys=KeyRing([EncryptedFileKeyBackend(lab.pki_dir / "keys", PASSPHRASE)]))
            try:
                other.authority.revoke(cert.serial_hex, reason=RevocationReason.KEY_COMPROMISE, actor="cli")
            finally:
                other.close()

        await run_blocking(revoke_elsewhere)
        await run_blocking(dev.disconnected.wait, WAIT_S)
        assert dev.disconnected.is_set(), "the revoked device was not kicked"
        assert dev.disconnect_reason.value == 152  # Administrative action (dynsec)
        assert "certificate revoked" in tls_alert(lab, cert)
        res = mosquitto_pub(lab, cert, lab.topic("dev-live"))
        assert refused(res)
    finally:
        lab.sync.stop()
        await asyncio.wait_for(task, WAIT_S)
    assert "disableClient | username=dev-live" in lab.log_text()


async def test_unregistered_device_loses_its_dynsec_client(mosquitto_lab: MosquittoLab,
                                                          paho_clients: list[PahoDevice]) -> None:
    lab = mosquitto_lab
    (cert,) = await devices(lab, "dev-gone")
    dev = connect(lab, paho_clients, cert)
    assert not dev.publish(lab.topic("dev-gone")).is_failure
    await run_blocking(lab.engine.registry.unregister, cert.owner.id, actor="test")  # type: ignore[union-attr]
    report = await lab.sync.sync_once()
    assert report.deleted == ["dev-gone"]
    await run_blocking(dev.disconnected.wait, WAIT_S)  # deleteClient drops its session
    assert dev.disconnected.is_set()
    # Still a valid certificate, so TLS admits it, but it has no topics any more.
    again = connect(lab, paho_clients, cert)
    assert again.publish(lab.topic("dev-gone")).value == 135


# -- the CRL safety rule: a bad CRL never reaches Mosquitto ------------------------------------------
def _crl(lab: MosquittoLab, kind: str) -> bytes:
    ca = lab.engine.hierarchy.issuing_ca_for(GROUP, None)
    ca_cert = x509.load_der_x509_certificate(ca.certificate_der)
    if kind == "corrupt":
        good = lab.settings.crlfile.read_bytes()
        return good[:40] + b"garbage" + good[47:]
    if kind == "empty":
        return b""
    now = utcnow()
    builder = x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
    if kind == "expired":
        _cert, key = ca_signing_material(lab.engine, ca)
        builder = builder.last_update(now - timedelta(days=10)).next_update(now - timedelta(days=1))
    else:  # wrong key: the right issuer name, someone else's signature
        key = ec.generate_private_key(ec.SECP256R1())
        builder = builder.last_update(now).next_update(now + timedelta(days=30))
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kind", "reason"), [("corrupt", "crl_invalid"), ("empty", "crl_empty"),
                                              ("expired", "crl_expired"), ("wrong-key", "crl_bad_signature")])
async def test_bad_crl_is_never_installed_and_the_old_crl_stays_in_force(mosquitto_lab: MosquittoLab, kind: str,
                                                                         reason: str) -> None:
    lab = mosquitto_lab
    cert = await run_blocking(lab.device, f"dev-crl-{kind}")
    await run_blocking(lab.revoke, cert)
    await lab.sync.sync_once()
    assert "certificate revoked" in tls_alert(lab, cert)
    s = lab.settings
    before = (s.cafile.read_bytes(), s.crlfile.read_bytes(), sorted(p.name for p in s.workdir.iterdir()))
    hups = len(lab.reloads)

    with pytest.raises(UnsafeTrustFiles) as refused:
        install_trust_files(s.cafile, s.crlfile, s.cafile.read_bytes(), _crl(lab, kind), reload=lab.process.hup)
    assert refused.value.reason == reason
    assert (s.cafile.read_bytes(), s.crlfile.read_bytes(), sorted(p.name for p in s.workdir.iterdir())) == before
    assert len(lab.reloads) == hups

    # Even if something else reloads the broker now, it reloads the old, good CRL: the revoked cert stays out.
    reloads_logged = lab.log_text().count("Reloading config")
    hup_from_pid_file(lab.settings.pid_file)  # what the sync does for a broker it did not start
    wait_until(lambda: lab.log_text().count("Reloading config") > reloads_logged, "the broker to reload",
               timeout=WAIT_S)
    assert "certificate revoked" in tls_alert(lab, cert)


async def test_sync_refuses_to_install_a_crl_too_close_to_expiry(mosquitto_lab: MosquittoLab) -> None:
    lab = mosquitto_lab
    # A margin longer than the engine's CRL lifetime: every CRL counts as about to expire.
    strict = lab.settings.model_copy(update={"crl_min_remaining_s": 10 * 365 * 86400.0})
    hups: list[int] = []
    before = lab.settings.crlfile.read_bytes()
    sync = MosquittoSync(lab.engine, strict, GROUP, reload=lambda: hups.append(1))
    try:
        report = await sync.sync_once()
    finally:
        await sync.close()
    assert report.refused == "crl_expiring" and not report.files_installed
    assert lab.settings.crlfile.read_bytes() == before and hups == []


# -- keep last: revokes the device group's issuing CA --------------------------------------------------
async def test_revoked_issuing_ca_is_removed_from_cafile_and_its_devices_refused(
        mosquitto_lab: MosquittoLab, paho_clients: list[PahoDevice]) -> None:
    lab = mosquitto_lab
    (cert,) = await devices(lab, "dev-ca-victim")
    dev = connect(lab, paho_clients, cert)
    ca = await run_blocking(lab.engine.hierarchy.issuing_ca_for, GROUP, None)
    ca_pem = x509.load_der_x509_certificate(ca.certificate_der).public_bytes(Encoding.PEM)
    assert ca_pem in lab.settings.cafile.read_bytes()

    await run_blocking(lab.engine.authority.revoke, ca.serial, reason=RevocationReason.CA_COMPROMISE, actor="test")
    report = await lab.sync.sync_once()
    assert report.files_installed and report.refused is None
    assert "dev-ca-victim" in report.kicked
    cafile = lab.settings.cafile.read_bytes()
    assert ca_pem not in cafile
    root_pem = x509.load_der_x509_certificate(lab.engine.hierarchy.root().certificate_der).public_bytes(Encoding.PEM)
    assert cafile == root_pem  # only the root is left

    await run_blocking(dev.disconnected.wait, WAIT_S)
    assert dev.disconnected.is_set()
    assert "alert" in tls_alert(lab, cert)
    assert refused(mosquitto_pub(lab, cert, lab.topic("dev-ca-victim")))
