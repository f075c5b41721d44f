"""Enrollment and renewal over MQTT: the service against a real amqtt broker over TLS, with a real engine.

The broker here is the permissive `plain_broker` (anyone may publish anywhere), so every refusal below is the
service's own doing. A test client without a certificate plays the device (or the attacker) on the wire.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from gmqtt import Client as GmqttClient
from gmqtt.mqtt.constants import MQTTv311

from mqtt_broker_auth.enrollment.messages import (
    EnrollmentRequest,
    build_request,
    sign,
    signing_input,
    verify,
)
from mqtt_broker_auth.enrollment.service import EnrollmentService, EnrollmentSettings
from simulators.manufacturer import BootstrapCredential, Manufacturer
from tests.mqtt_broker_auth.conftest import ACTOR, from_issued, mqtt_config
from tests.mqtt_broker_auth.plain_broker import PlainBroker, start_plain_broker
from trustlists.engine import Engine
from trustlists.models import CertificateStatus, KeyType, RevocationReason
from trustlists.policy import PkiConfig
from trustlists.testing import Clock, eventually, make_csr, make_engine, new_key, store_snapshot

PREFIX = "otpki/enroll"


# -- fixtures -----------------------------------------------------------------------------------------------------

@pytest.fixture
def manufacturer(engine: Engine) -> Manufacturer:
    maker = Manufacturer.create("ACME Devices")
    engine.trustlists.import_external("mqtt-device", maker.ca_pem.encode(), list_name="trusted",
                                      note="ACME IDevID CA", actor=ACTOR)
    return maker


@pytest.fixture
async def broker(engine: Engine, manufacturer: Manufacturer, tmp_path: Path) -> AsyncIterator[PlainBroker]:
    plain = await start_plain_broker(engine, tmp_path / "broker")
    yield plain
    await plain.stop()


def service_files(engine: Engine, directory: Path, name: str = "enrollment-svc") -> tuple[Path, Path]:
    owner = engine.registry.register(group="mqtt-device", name=name, site="north", actor=ACTOR,
                                     attributes={"role": "enrollment-service"})
    cert = from_issued(engine.authority.issue_with_new_key(owner_id=owner.id, actor=ACTOR), owner, directory)
    return cert.cert_file, cert.key_file


@pytest.fixture
async def service(engine: Engine, broker: PlainBroker, tmp_path: Path,
                  request: pytest.FixtureRequest) -> AsyncIterator[EnrollmentService]:
    """A running service; tests that are not about flooding get a burst large enough not to notice it.

    The refill is slowed from 1/10 s to 1/1000 s so that a slow machine cannot refill a bucket mid-test.
    """
    cert_file, key_file = service_files(engine, tmp_path / "svc")
    overrides = getattr(request, "param", {"burst": 100})
    settings = EnrollmentSettings(refill_per_s=0.001, **overrides)
    svc = EnrollmentService(engine, host=broker.host, port=broker.port, ca_file=broker.server_ca_file,
                            cert_file=cert_file, key_file=key_file, settings=settings)
    await svc.start()
    yield svc
    await svc.stop()


class Wire:
    """A certless MQTT client that publishes raw payloads on request topics and collects the answers."""

    def __init__(self, broker: PlainBroker) -> None:
        self._broker = broker
        self._client = GmqttClient(f"wire-{uuid.uuid4().hex[:8]}")
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self.answers: asyncio.Queue[tuple[str, dict[str, object]]] = asyncio.Queue()
        self._subacks: asyncio.Queue[int] = asyncio.Queue()

    def _on_message(self, client: object, topic: str, payload: bytes, qos: int, properties: object) -> int:
        if not topic.endswith("/csr"):  # requests echo back to us too; only answers are JSON we made
            self.answers.put_nowait((topic, json.loads(payload)))
        return 0

    def _on_subscribe(self, client: object, mid: int, qos: object, properties: object) -> None:
        self._subacks.put_nowait(mid)

    async def connect(self) -> None:
        context = ssl.create_default_context(cafile=str(self._broker.server_ca_file))
        await self._client.connect(self._broker.host, self._broker.port, ssl=context, version=MQTTv311)
        self._client.subscribe(f"{PREFIX}/+/+", qos=1)
        await asyncio.wait_for(self._subacks.get(), 10)

    async def close(self) -> None:
        await self._client.disconnect()

    def send(self, device: str, payload: bytes | str | EnrollmentRequest) -> None:
        if isinstance(payload, EnrollmentRequest):
            payload = payload.model_dump_json(exclude_none=True)
        self._client.publish(f"{PREFIX}/{device}/csr", payload, qos=1)

    async def answer(self, device: str) -> tuple[str, dict[str, object]]:
        """The next accepted/rejected answer, which must be on `device`'s topics."""
        topic, body = await asyncio.wait_for(self.answers.get(), 20)
        assert topic.startswith(f"{PREFIX}/{device}/"), (topic, body)
        return topic.rsplit("/", 1)[1], body

    async def ask(self, device: str, payload: bytes | str | EnrollmentRequest) -> tuple[str, dict[str, object]]:
        self.send(device, payload)
        return await self.answer(device)


@pytest.fixture
async def wire(broker: PlainBroker, service: EnrollmentService) -> AsyncIterator[Wire]:
    client = Wire(broker)
    await client.connect()
    yield client
    await client.close()


@pytest.fixture
async def other_wire(engine: Engine, service: EnrollmentService, tmp_path: Path,
                     clock: Clock) -> AsyncIterator[Wire]:
    """A second broker with its own enrollment service (same settings) in what stands for another process: its own
    Engine on the same SQLite file. The embedded broker's service next to the Mosquitto side's, say."""
    other = make_engine(tmp_path / "pki", clock=clock, config=mqtt_config())
    plain = await start_plain_broker(other, tmp_path / "broker-2")
    cert_file, key_file = service_files(other, tmp_path / "svc-2", name="enrollment-svc-2")
    svc = EnrollmentService(other, host=plain.host, port=plain.port, ca_file=plain.server_ca_file,
                            cert_file=cert_file, key_file=key_file, settings=service.settings)
    client = Wire(plain)
    try:
        await svc.start()
        await client.connect()
        yield client
    finally:
        await client.close()
        await svc.stop()
        await plain.stop()
        other.close()


def register(engine: Engine, name: str, credential: BootstrapCredential, *, by: str = "subject_cn",
             site: str = "north") -> str:
    owner = engine.registry.register(group="mqtt-device", name=name, site=site, actor=ACTOR,
                                     attributes={"bootstrap": [credential.allow_list_entry(by=by)]})
    return owner.id


def key_of(pem: str):  # type: ignore[no-untyped-def]
    return serialization.load_pem_private_key(pem.encode(), password=None)


def csr_request(device: str, credential_pem: str, credential_key, *, cn: str | None = None,  # type: ignore[no-untyped-def]
                **kwargs) -> EnrollmentRequest:
    csr = make_csr(cn or device).decode()
    return build_request(f"{PREFIX}/{device}/csr", credential_pem=credential_pem, credential_key=credential_key,
                         csr_pem=csr, **kwargs)


def certs_issued(engine: Engine) -> int:
    return store_snapshot(engine)[0]


# -- signatures: the canonical form and every credential key type --------------------------------------------------

@pytest.mark.parametrize("kind", ["ec-p256", "ec-p384", "ed25519", "rsa2048"])
def test_signature_round_trip_and_binding(kind: str) -> None:
    key = new_key(kind)
    data = signing_input("otpki/enroll/a/csr", request_id=str(uuid.uuid4()), timestamp="2026-01-01T00:00:00Z",
                         csr="x", server_keygen=False, key_type=None)
    signature = sign(key, data)
    assert verify(key.public_key(), signature, data)
    assert not verify(key.public_key(), signature, data.replace(b"enroll/a/", b"enroll/b/"))  # other topic
    assert not verify(new_key(kind).public_key(), signature, data)  # other key
    assert not verify(key.public_key(), "not base64!", data)


def test_request_shape_is_checked() -> None:
    key = new_key()
    good = build_request("t", credential_pem="p", credential_key=key, csr_pem="c").model_dump()
    with pytest.raises(ValueError):
        EnrollmentRequest.model_validate({**good, "serverKeygen": True})  # both kinds
    with pytest.raises(ValueError):
        EnrollmentRequest.model_validate({**good, "requestId": "1234"})
    with pytest.raises(ValueError):
        EnrollmentRequest.model_validate({**good, "timestamp": "2026-01-01T00:00:00"})  # no offset
    with pytest.raises(ValueError):
        EnrollmentRequest.model_validate({**good, "extra": 1})


# -- first enrollment ---------------------------------------------------------------------------------------------

async def test_first_enrollment_with_idevid_csr(engine: Engine, manufacturer: Manufacturer, wire: Wire) -> None:
    idevid = manufacturer.issue_idevid("SN-0001")
    owner_id = register(engine, "pump-1", idevid)
    device_key = new_key()
    csr = make_csr("pump-1", key=device_key).decode()
    request = build_request(f"{PREFIX}/pump-1/csr", credential_pem=idevid.cert_file_pem,
                            credential_key=key_of(idevid.key_pem), csr_pem=csr)
    kind, body = await wire.ask("pump-1", request)
    assert kind == "accepted", body
    assert body["requestId"] == request.requestId and "privateKey" not in body
    cert = x509.load_pem_x509_certificate(str(body["certificate"]).encode())
    assert cert.subject.rfc4514_string().startswith("CN=pump-1")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:otpki:mqtt:north:pump-1"]
    assert cert.public_key() == device_key.public_key()
    chain = [x509.load_pem_x509_certificate(str(p).encode()) for p in body["chain"]]  # type: ignore[union-attr]
    assert len(chain) == 1 and chain[0].subject != chain[0].issuer  # issuing CA, root excluded
    record = engine.inventory.get(str(body["serial"]))
    assert record.owner_id == owner_id and record.status_at(datetime.now(UTC)) == CertificateStatus.ACTIVE


async def test_first_enrollment_server_keygen_with_factory_certificate(engine: Engine, wire: Wire) -> None:
    factory = Manufacturer.factory_self_signed("SN-FACTORY-9")
    register(engine, "valve-9", factory, by="sha256")
    request = build_request(f"{PREFIX}/valve-9/csr", credential_pem=factory.cert_file_pem,
                            credential_key=key_of(factory.key_pem), server_keygen=True, key_type=KeyType.EC_P256)
    kind, body = await wire.ask("valve-9", request)
    assert kind == "accepted", body
    cert = x509.load_pem_x509_certificate(str(body["certificate"]).encode())
    assert cert.public_key() == key_of(str(body["privateKey"])).public_key()


# -- renewal --------------------------------------------------------------------------------------------------------

async def test_renewal_keeps_identity_and_supersedes(engine: Engine, manufacturer: Manufacturer,
                                                      wire: Wire) -> None:
    idevid = manufacturer.issue_idevid("SN-0002")
    owner_id = register(engine, "pump-2", idevid)
    first_key = new_key()
    kind, first = await wire.ask("pump-2", build_request(
        f"{PREFIX}/pump-2/csr", credential_pem=idevid.cert_file_pem, credential_key=key_of(idevid.key_pem),
        csr_pem=make_csr("pump-2", key=first_key).decode()))
    assert kind == "accepted", first
    operational_pem = str(first["certificate"]) + "".join(first["chain"])  # type: ignore[arg-type]

    # Renewal with a new device key, authorized by the operational certificate.
    second_key = new_key("ec-p384")
    kind, second = await wire.ask("pump-2", build_request(
        f"{PREFIX}/pump-2/csr", credential_pem=operational_pem, credential_key=first_key,
        csr_pem=make_csr("pump-2", key=second_key).decode()))
    assert kind == "accepted", second
    old = engine.inventory.get(str(first["serial"]))
    new = engine.inventory.get(str(second["serial"]))
    assert new.owner_id == owner_id == old.owner_id and new.subject == old.subject
    assert old.superseded_by == new.serial and new.issuance.value == "renewal"

    # The superseded certificate cannot renew again; nothing is issued.
    before = certs_issued(engine)
    kind, again = await wire.ask("pump-2", build_request(
        f"{PREFIX}/pump-2/csr", credential_pem=operational_pem, credential_key=first_key,
        csr_pem=make_csr("pump-2").decode()))
    assert kind == "rejected" and again["reason"] == "csr_refused:invalid_state", again
    assert certs_issued(engine) == before

    # Renewal by server-side keygen with the current certificate.
    current_pem = str(second["certificate"]) + "".join(second["chain"])  # type: ignore[arg-type]
    kind, third = await wire.ask("pump-2", build_request(
        f"{PREFIX}/pump-2/csr", credential_pem=current_pem, credential_key=second_key, server_keygen=True))
    assert kind == "accepted" and third["privateKey"], third
    assert engine.inventory.get(str(second["serial"])).superseded_by == third["serial"]


# -- bad input ------------------------------------------------------------------------------------------------------

async def test_bad_input_is_refused_and_nothing_issued(engine: Engine, manufacturer: Manufacturer, wire: Wire,
                                                       service: EnrollmentService) -> None:
    idevid = manufacturer.issue_idevid("SN-0003")
    register(engine, "pump-3", idevid)
    other = manufacturer.issue_idevid("SN-0004")
    register(engine, "pump-4", other)
    key = key_of(idevid.key_pem)
    before = certs_issued(engine)

    async def refused(device: str, payload: bytes | str | EnrollmentRequest, reason: str) -> None:
        kind, body = await wire.ask(device, payload)
        assert (kind, body["reason"]) == ("rejected", reason), body
        assert certs_issued(engine) == before

    await refused("pump-3", b"\xff not json", "malformed")
    await refused("pump-3", json.dumps({"requestId": str(uuid.uuid4())}), "malformed")
    await refused("pump-3", b"{" + b" " * (16 * 1024 + 1) + b"}", "too_large")
    # A CSR for another identity: the engine's CN check.
    await refused("pump-3", csr_request("pump-3", idevid.cert_file_pem, key, cn="pump-4"),
                  "csr_refused:subject_mismatch")
    # A CSR whose own signature does not verify (one byte of the signature flipped).
    der = bytearray(make_csr("pump-3", pem=False))
    der[-5] ^= 0x01
    bad_csr = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
    await refused("pump-3", build_request(f"{PREFIX}/pump-3/csr", credential_pem=idevid.cert_file_pem,
                                          credential_key=key, csr_pem=bad_csr), "csr_refused:bad_signature")
    # The request signed by a key that is not the credential's.
    await refused("pump-3", csr_request("pump-3", idevid.cert_file_pem, new_key()), "bad_signature")
    # A valid request of pump-4 replayed on pump-3's topic: the signature covers the topic.
    copied = csr_request("pump-4", other.cert_file_pem, key_of(other.key_pem))
    await refused("pump-3", copied, "bad_signature")
    # pump-4's credential, properly signed for pump-3's topic: it is not pump-3.
    await refused("pump-3", csr_request("pump-3", other.cert_file_pem, key_of(other.key_pem), cn="pump-3"),
                  "identity_mismatch")
    # A certificate nobody allow-listed.
    stranger = Manufacturer.factory_self_signed("SN-STRANGER")
    await refused("pump-3", csr_request("pump-3", stranger.cert_file_pem, key_of(stranger.key_pem)),
                  "unauthorized")
    # Too old, and from the future.
    await refused("pump-3", csr_request("pump-3", idevid.cert_file_pem, key,
                                        now=datetime.now(UTC) - timedelta(minutes=10)), "stale")
    await refused("pump-3", csr_request("pump-3", idevid.cert_file_pem, key,
                                        now=datetime.now(UTC) + timedelta(minutes=10)), "stale")
    # A garbled signature field.
    tampered = csr_request("pump-3", idevid.cert_file_pem, key).model_copy(
        update={"signature": base64.b64encode(b"x" * 64).decode()})
    await refused("pump-3", tampered, "bad_signature")

    # A good request is served; its replay is refused and issues nothing.
    good = csr_request("pump-4", other.cert_file_pem, key_of(other.key_pem))
    kind, body = await wire.ask("pump-4", good)
    assert kind == "accepted", body
    before = certs_issued(engine)
    await refused("pump-4", good, "replay")

    # The replay memory survives a restart of the service: a new instance on a new engine (a new process).
    await service.stop()
    fresh = make_engine(engine._ctx.store.path.parent, config=mqtt_config())  # type: ignore[attr-defined]
    restarted = EnrollmentService(fresh, host=service._host, port=service._port, ca_file=service._ca_file,
                                  cert_file=service._cert_file, key_file=service._key_file,
                                  settings=service.settings)
    await restarted.start()
    try:
        await refused("pump-4", good, "replay")
    finally:
        await restarted.stop()
        fresh.close()


@pytest.mark.parametrize("service", [{"burst": 5}], indirect=True)
async def test_flood_is_rate_limited_then_dropped(engine: Engine, manufacturer: Manufacturer, wire: Wire,
                                                  service: EnrollmentService) -> None:
    idevid = manufacturer.issue_idevid("SN-0005")
    register(engine, "pump-5", idevid)
    before = certs_issued(engine)
    settings = service.settings
    for _ in range(settings.burst):  # the burst is served (and refused on its merits)
        kind, body = await wire.ask("pump-5", b"{}")
        assert body["reason"] == "malformed"
    for _ in range(settings.rejections_before_silence):
        kind, body = await wire.ask("pump-5", csr_request("pump-5", idevid.cert_file_pem, key_of(idevid.key_pem)))
        assert (kind, body["reason"]) == ("rejected", "rate_limited"), body
    dropped = service.counters["dropped"]
    wire.send("pump-5", b"{}")  # beyond that: silence

    # Another device is still served, and its answer is the next one on the wire (pump-5 got none).
    idevid6 = manufacturer.issue_idevid("SN-0006")
    register(engine, "pump-6", idevid6)
    kind, body = await wire.ask("pump-6", csr_request("pump-6", idevid6.cert_file_pem, key_of(idevid6.key_pem)))
    assert kind == "accepted", body
    assert service.counters["dropped"] == dropped + 1
    assert certs_issued(engine) == before + 1


# -- one memory for every service on the store ---------------------------------------------------------------------

async def test_a_request_accepted_by_one_service_is_a_replay_at_another(engine: Engine, manufacturer: Manufacturer,
                                                                        wire: Wire, other_wire: Wire) -> None:
    idevid = manufacturer.issue_idevid("SN-0020")
    register(engine, "pump-20", idevid)
    captured = csr_request("pump-20", idevid.cert_file_pem, key_of(idevid.key_pem))
    kind, body = await wire.ask("pump-20", captured)
    assert kind == "accepted", body
    before = certs_issued(engine)
    kind, body = await other_wire.ask("pump-20", captured)  # captured on one broker, replayed on the other
    assert (kind, body["reason"]) == ("rejected", "replay"), body
    assert certs_issued(engine) == before
    kind, body = await wire.ask("pump-20", captured)
    assert (kind, body["reason"]) == ("rejected", "replay"), body


@pytest.mark.parametrize("service", [{"burst": 3}], indirect=True)
async def test_rate_limit_is_shared_by_the_services_on_one_store(engine: Engine, manufacturer: Manufacturer,
                                                                 wire: Wire, other_wire: Wire) -> None:
    idevid = manufacturer.issue_idevid("SN-0021")
    register(engine, "pump-21", idevid)
    key = key_of(idevid.key_pem)
    for ask in (wire.ask, other_wire.ask, wire.ask):  # the device's burst, spent across both services
        kind, body = await ask("pump-21", csr_request("pump-21", idevid.cert_file_pem, key))
        assert kind == "accepted", body
    before = certs_issued(engine)
    for ask in (other_wire.ask, wire.ask):  # each service's own bucket still has room; the shared one has not
        kind, body = await ask("pump-21", csr_request("pump-21", idevid.cert_file_pem, key))
        assert (kind, body["reason"]) == ("rejected", "rate_limited"), body
    assert certs_issued(engine) == before
    other = manufacturer.issue_idevid("SN-0022")  # another device has its own budget
    register(engine, "pump-22", other)
    kind, body = await other_wire.ask("pump-22", csr_request("pump-22", other.cert_file_pem, key_of(other.key_pem)))
    assert kind == "accepted", body


# -- one enrollment per IDevID ----------------------------------------------------------------------------------

async def test_pinned_idevid_alone_enrolls_again_and_replaces_the_old_certificate(
        engine: Engine, manufacturer: Manufacturer, wire: Wire) -> None:
    genuine = manufacturer.issue_idevid("SN-0030")
    forged = manufacturer.issue_idevid("SN-0030")  # same CN from the same manufacturer CA: any key holder's forgery
    register(engine, "pump-30", genuine)
    first_key = new_key()
    kind, first = await wire.ask("pump-30", build_request(
        f"{PREFIX}/pump-30/csr", credential_pem=genuine.cert_file_pem, credential_key=key_of(genuine.key_pem),
        csr_pem=make_csr("pump-30", key=first_key).decode()))
    assert kind == "accepted", first

    before = certs_issued(engine)
    for request in (csr_request("pump-30", forged.cert_file_pem, key_of(forged.key_pem)),
                    build_request(f"{PREFIX}/pump-30/csr", credential_pem=forged.cert_file_pem,
                                  credential_key=key_of(forged.key_pem), server_keygen=True)):
        kind, body = await wire.ask("pump-30", request)
        assert (kind, body["reason"]) == ("rejected", "unauthorized"), body
        assert "bootstrap_pinned" in str(body["message"]), body
    assert certs_issued(engine) == before

    # Factory reset: the device lost its operational identity and comes back with its IDevID.
    kind, second = await wire.ask("pump-30", csr_request("pump-30", genuine.cert_file_pem, key_of(genuine.key_pem)))
    assert kind == "accepted", second
    old = engine.inventory.get(str(first["serial"]))
    assert old.revocation_reason == RevocationReason.SUPERSEDED and old.superseded_by == second["serial"]
    owner = engine.registry.find("mqtt-device", name="pump-30")
    assert owner is not None
    assert [c.serial for c in engine.inventory.query(owner_id=owner.id, status=CertificateStatus.ACTIVE)] \
        == [second["serial"]]
    # The old operational certificate no longer authenticates anything.
    old_pem = str(first["certificate"]) + "".join(first["chain"])  # type: ignore[arg-type]
    kind, body = await wire.ask("pump-30", build_request(f"{PREFIX}/pump-30/csr", credential_pem=old_pem,
                                                         credential_key=first_key, server_keygen=True))
    assert (kind, body["reason"]) == ("rejected", "unauthorized") and "revoked" in str(body["message"]), body


async def test_service_resubscribes_after_a_broker_restart(engine: Engine, manufacturer: Manufacturer,
                                                          broker: PlainBroker, tmp_path: Path) -> None:
    cert_file, key_file = service_files(engine, tmp_path / "svc")
    svc = EnrollmentService(engine, host=broker.host, port=broker.port, ca_file=broker.server_ca_file,
                            cert_file=cert_file, key_file=key_file,
                            settings=EnrollmentSettings(reconnect_delay_s=0.2))
    await svc.start()
    restarted: PlainBroker | None = None
    try:
        assert svc.serving.is_set()
        await broker.stop()
        await eventually(lambda: not svc.serving.is_set(), "the service to notice the broker is gone", timeout=20)
        restarted = await start_plain_broker(engine, tmp_path / "broker", port=broker.port)
        await asyncio.wait_for(svc.serving.wait(), 20)  # reconnected and subscribed again, by itself
        idevid = manufacturer.issue_idevid("SN-0010")
        register(engine, "pump-10", idevid)
        wire = Wire(restarted)
        await wire.connect()
        try:
            kind, body = await wire.ask("pump-10", csr_request("pump-10", idevid.cert_file_pem,
                                                               key_of(idevid.key_pem)))
            assert kind == "accepted", body
        finally:
            await wire.close()
    finally:
        await svc.stop()
        if restarted is not None:
            await restarted.stop()


async def test_enrollment_service_identity_cannot_enroll(engine: Engine, wire: Wire, tmp_path: Path) -> None:
    # The service's own certificate is operational, but its role is not a device's.
    svc = engine.registry.find("mqtt-device", name="enrollment-svc")
    assert svc is not None
    cert_pem = (tmp_path / "svc" / "enrollment-svc.crt").read_text()
    key = key_of((tmp_path / "svc" / "enrollment-svc.key").read_text())
    before = certs_issued(engine)
    kind, body = await wire.ask("enrollment-svc", csr_request("enrollment-svc", cert_pem, key))
    assert (kind, body["reason"]) == ("rejected", "unauthorized"), body
    assert certs_issued(engine) == before


async def test_names_in_an_enrollment_csr_are_judged(engine: Engine, manufacturer: Manufacturer,
                                                     wire: Wire) -> None:
    """A device that passes every enrollment check still gets no certificate for a subject the engine refuses."""
    from cryptography.x509.oid import NameOID

    from trustlists.testing import make_subject_csr

    idevid = manufacturer.issue_idevid("SN-0005")
    register(engine, "pump-5", idevid)
    before = certs_issued(engine)
    subjects = [
        ([(NameOID.COMMON_NAME, "pump-5"), (NameOID.COMMON_NAME, "otpki-admin")], "subject_cn_repeated"),
        ([(NameOID.COMMON_NAME, "pump-5"), (NameOID.ORGANIZATION_NAME, "O" * 65)], "name_too_long"),
        ([(NameOID.COMMON_NAME, "pump-5"), (NameOID.ORGANIZATION_NAME, "ACME\u202e")], "name_format_character"),
    ]
    for attributes, reason in subjects:
        request = build_request(f"{PREFIX}/pump-5/csr", credential_pem=idevid.cert_file_pem,
                                credential_key=key_of(idevid.key_pem),
                                csr_pem=make_subject_csr(attributes).decode())
        kind, body = await wire.ask("pump-5", request)
        assert (kind, body["reason"]) == ("rejected", f"csr_refused:{reason}"), body
    assert certs_issued(engine) == before


def test_prefix_comes_from_policy(engine: Engine) -> None:
    config: PkiConfig = engine.config
    assert EnrollmentService(engine, host="127.0.0.1", port=1, ca_file="x", cert_file="x", key_file="x",
                             client_id="svc").prefix == config.group("mqtt-device").fronts["mqtt"]["enrollment_prefix"]
