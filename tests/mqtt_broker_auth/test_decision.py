"""The decision core with real engine certificates: who is admitted, as whom, and to which topics."""

from __future__ import annotations

from pathlib import Path

import pytest

from mqtt_broker_auth.decision import DeviceGate, DeviceIdentity, Refusal
from tests.mqtt_broker_auth.conftest import (
    ACTOR,
    DeviceCert,
    advance,
    issue_device,
    make_external_ca,
    make_external_leaf,
    mqtt_config,
    sha256_hex,
)
from trustlists.engine import Engine
from trustlists.models import RevocationReason
from trustlists.testing import Clock, make_csr, make_engine


def admitted(outcome: DeviceIdentity | Refusal) -> DeviceIdentity:
    assert isinstance(outcome, DeviceIdentity), outcome
    return outcome


def refused(outcome: DeviceIdentity | Refusal, reason: str) -> Refusal:
    assert isinstance(outcome, Refusal), outcome
    assert outcome.reason == reason, outcome
    return outcome


@pytest.fixture
def gate(engine: Engine) -> DeviceGate:
    return DeviceGate(engine)


@pytest.fixture
def pump(engine: Engine, tmp_path: Path) -> DeviceCert:
    return issue_device(engine, "pump-7", tmp_path / "certs")


def test_valid_device_is_operational_with_its_topics(gate: DeviceGate, pump: DeviceCert) -> None:
    identity = admitted(gate.authenticate(pump.chain, client_id="pump-7"))
    assert identity.device == "pump-7" and identity.site == "north" and identity.kind == "operational"
    assert identity.owner_id == pump.owner.id  # type: ignore[union-attr]
    assert identity.issuer_ca_id is not None and identity.role is None
    assert identity.topics.publish == ("plant/north/pump-7/#",)
    assert gate.still_valid(identity)
    # The leaf alone is enough: the validator finds the issuing CA in the trust list.
    admitted(gate.authenticate([pump.certificate_der], client_id="pump-7"))
    # No client id to compare (an enrollment request checked outside a connection).
    admitted(gate.authenticate(pump.chain, client_id=None))


def test_expired_and_not_yet_valid(gate: DeviceGate, pump: DeviceCert, clock: Clock) -> None:
    identity = admitted(gate.authenticate(pump.chain, client_id="pump-7"))
    advance(clock, days=366)
    refused(gate.authenticate(pump.chain, client_id="pump-7"), "expired")
    assert not gate.still_valid(identity)  # a live session ends when its certificate does
    advance(clock, days=-368)
    refused(gate.authenticate(pump.chain, client_id="pump-7"), "not_yet_valid")


def test_revoked_leaf(engine: Engine, gate: DeviceGate, pump: DeviceCert) -> None:
    identity = admitted(gate.authenticate(pump.chain, client_id="pump-7"))
    engine.authority.revoke(pump.serial_hex, reason=RevocationReason.KEY_COMPROMISE, actor=ACTOR)
    refused(gate.authenticate(pump.chain, client_id="pump-7"), "revoked")
    assert not gate.still_valid(identity)


def test_revoked_issuing_ca(engine: Engine, gate: DeviceGate, pump: DeviceCert) -> None:
    identity = admitted(gate.authenticate(pump.chain, client_id="pump-7"))
    ca = next(ca for ca in engine.hierarchy.list() if ca.group == "mqtt-device")
    engine.authority.revoke(ca.serial, reason=RevocationReason.CA_COMPROMISE, actor=ACTOR)
    assert not gate.still_valid(identity)
    refusal = refused(gate.authenticate(pump.chain, client_id="pump-7"), "revoked")
    assert ca.name in refusal.detail
    refused(gate.authenticate([pump.certificate_der], client_id="pump-7"), "revoked")


def test_revocation_from_another_engine_is_seen_after_refresh(tmp_path: Path, engine: Engine, gate: DeviceGate,
                                                              pump: DeviceCert) -> None:
    identity = admitted(gate.authenticate(pump.chain, client_id="pump-7"))
    other = make_engine(tmp_path / "pki", config=mqtt_config())  # the CLI in another process, same database
    try:
        other.authority.revoke(pump.serial_hex, reason=RevocationReason.KEY_COMPROMISE, actor=ACTOR)
    finally:
        other.close()
    assert gate.still_valid(identity)  # not yet: this process has not looked
    engine.refresh_revocations()
    assert not gate.still_valid(identity)
    refused(gate.authenticate(pump.chain, client_id="pump-7"), "revoked")


def test_untrusted_ca(gate: DeviceGate, tmp_path: Path) -> None:
    rogue = make_external_leaf(tmp_path, "pump-7", ca=make_external_ca("Rogue CA"))
    refused(gate.authenticate(rogue.chain, client_id="pump-7"), "untrusted")
    self_signed = make_external_leaf(tmp_path, "pump-7")
    refused(gate.authenticate(self_signed.chain, client_id="pump-7"), "untrusted")


def test_wrong_usage_server_certificate(engine: Engine, tmp_path: Path) -> None:
    owner = engine.registry.register(group="mqtt-broker", name="broker-1", ip_addresses=["127.0.0.1"], actor=ACTOR)
    issued = engine.authority.issue_with_new_key(owner_id=owner.id, actor=ACTOR)
    chain = [issued.certificate_der, *issued.chain_der]
    # On the device gate it is simply not trusted (another group's CA) ...
    refused(DeviceGate(engine).authenticate(chain, client_id="broker-1"), "untrusted")
    # ... and where its CA is trusted, serverAuth is not clientAuth.
    refused(DeviceGate(engine, group="mqtt-broker").authenticate(chain, client_id="broker-1"), "wrong_usage")


def test_no_certificate_and_garbage(gate: DeviceGate, pump: DeviceCert) -> None:
    refused(gate.authenticate([], client_id="pump-7"), "no_certificate")
    refused(gate.authenticate([b""], client_id="pump-7"), "no_certificate")
    refused(gate.authenticate([b"not a certificate"], client_id="pump-7"), "unparseable")
    refused(gate.authenticate([pump.certificate_der, b"\x30\x03garbage"], client_id="pump-7"), "unparseable")
    tampered = bytearray(pump.certificate_der)
    tampered[-5] ^= 0xFF  # inside the signature
    refused(gate.authenticate([bytes(tampered)], client_id="pump-7"), "invalid_certificate")


def test_unknown_and_unregistered_device(engine: Engine, gate: DeviceGate, pump: DeviceCert, tmp_path: Path) -> None:
    assert pump.owner is not None
    renamed = engine.registry.update(pump.owner.model_copy(update={"name": "pump-7-old"}), actor=ACTOR)
    refused(gate.authenticate(pump.chain, client_id="pump-7"), "unknown_device")
    engine.registry.update(renamed.model_copy(update={"name": "pump-7"}), actor=ACTOR)
    admitted(gate.authenticate(pump.chain, client_id="pump-7"))
    engine.registry.unregister(pump.owner.id, actor=ACTOR)
    refused(gate.authenticate(pump.chain, client_id="pump-7"), "unregistered")


def test_identity_must_match_registration(engine: Engine, gate: DeviceGate, pump: DeviceCert) -> None:
    # The device moved to another site: its old certificate's URI no longer names it.
    assert pump.owner is not None
    engine.registry.update(pump.owner.model_copy(update={"site": "south"}), actor=ACTOR)
    refusal = refused(gate.authenticate(pump.chain, client_id="pump-7"), "identity_mismatch")
    assert "urn:otpki:mqtt:south:pump-7" in refusal.detail


def test_client_id_must_match(gate: DeviceGate, pump: DeviceCert) -> None:
    refused(gate.authenticate(pump.chain, client_id="pump-8"), "client_id_mismatch")
    refused(gate.authenticate(pump.chain, client_id=""), "client_id_mismatch")


def test_bootstrap_via_manufacturer_ca(engine: Engine, gate: DeviceGate, tmp_path: Path) -> None:
    acme = make_external_ca()
    engine.trustlists.import_external("mqtt-device", acme.pem, list_name="trusted", note="ACME IDevID CA",
                                      actor=ACTOR)
    listed = make_external_leaf(tmp_path, "ACME-SN-0001", ca=acme)
    by_fp = make_external_leaf(tmp_path, "ACME-SN-0002", ca=acme, client_auth=False)  # IDevID without EKU
    stranger = make_external_leaf(tmp_path, "ACME-SN-0003", ca=acme)
    engine.registry.register(group="mqtt-device", name="valve-1", site="north", actor=ACTOR,
                             attributes={"bootstrap": [{"subject_cn": "ACME-SN-0001"}]})
    engine.registry.register(group="mqtt-device", name="valve-2", site="north", actor=ACTOR,
                             attributes={"bootstrap": [{"sha256": sha256_hex(by_fp.certificate_der)}]})
    identity = admitted(gate.authenticate(listed.chain, client_id="valve-1"))
    assert identity.kind == "bootstrap" and identity.device == "valve-1" and identity.issuer_ca_id is None
    assert gate.still_valid(identity)
    assert admitted(gate.authenticate([by_fp.certificate_der], client_id="valve-2")).device == "valve-2"
    refused(gate.authenticate(listed.chain, client_id="ACME-SN-0001"), "client_id_mismatch")
    refused(gate.authenticate(stranger.chain, client_id="valve-1"), "bootstrap_not_allowed")
    # Bootstrap topics: the enrollment topics and nothing else.
    assert gate.authorize(identity, "otpki/enroll/valve-1/csr", "publish")
    assert gate.authorize(identity, "otpki/enroll/valve-1/+", "subscribe")
    assert gate.authorize(identity, "otpki/enroll/valve-1/accepted", "subscribe")
    assert gate.authorize(identity, "otpki/enroll/valve-1/accepted", "receive")
    assert not gate.authorize(identity, "plant/north/valve-1/telemetry", "publish")
    assert not gate.authorize(identity, "otpki/enroll/valve-1/accepted", "publish")
    assert not gate.authorize(identity, "otpki/enroll/+/accepted", "subscribe")
    assert not gate.authorize(identity, "otpki/enroll/valve-2/csr", "publish")


def test_bootstrap_via_allow_listed_self_signed_certificate(engine: Engine, gate: DeviceGate, tmp_path: Path) -> None:
    factory = make_external_leaf(tmp_path, "factory-0042")
    other = make_external_leaf(tmp_path, "factory-0043")
    engine.registry.register(group="mqtt-device", name="valve-3", site="north", actor=ACTOR,
                             attributes={"bootstrap": [{"sha256": sha256_hex(factory.certificate_der).upper()}]})
    identity = admitted(gate.authenticate(factory.chain, client_id="valve-3"))
    assert identity.kind == "bootstrap" and identity.device == "valve-3"
    refused(gate.authenticate(other.chain, client_id="valve-3"), "untrusted")
    # The same certificate claimed by two devices admits neither.
    engine.registry.register(group="mqtt-device", name="valve-4", site="north", actor=ACTOR,
                             attributes={"bootstrap": [{"sha256": sha256_hex(factory.certificate_der)}]})
    refused(gate.authenticate(factory.chain, client_id="valve-3"), "untrusted")


def test_bootstrap_pin_narrows_the_allow_list_to_one_certificate(engine: Engine, gate: DeviceGate,
                                                                 tmp_path: Path) -> None:
    acme = make_external_ca()
    engine.trustlists.import_external("mqtt-device", acme.pem, list_name="trusted", note="ACME IDevID CA",
                                      actor=ACTOR)
    genuine = make_external_leaf(tmp_path / "genuine", "ACME-SN-0007", ca=acme)
    forged = make_external_leaf(tmp_path / "forged", "ACME-SN-0007", ca=acme)  # same CN, same CA
    owner = engine.registry.register(group="mqtt-device", name="valve-7", site="north", actor=ACTOR,
                                     attributes={"bootstrap": [{"subject_cn": "ACME-SN-0007"}]})
    live_genuine = admitted(gate.authenticate(genuine.chain, client_id="valve-7"))
    live_forged = admitted(gate.authenticate(forged.chain, client_id="valve-7"))  # nothing tells them apart yet

    engine.bootstrap.enroll(owner_id=owner.id, credential=genuine.certificate_der, actor=ACTOR,
                            csr=make_csr("valve-7"))
    refusal = refused(gate.authenticate(forged.chain, client_id="valve-7"), "bootstrap_pinned")
    assert "otpki owners rearm mqtt-device valve-7" in refusal.detail
    assert not gate.still_valid(live_forged) and gate.still_valid(live_genuine)
    admitted(gate.authenticate(genuine.chain, client_id="valve-7"))  # it may come back (factory reset)

    engine.bootstrap.rearm(owner.id, actor=ACTOR)
    assert gate.still_valid(live_forged)
    admitted(gate.authenticate(forged.chain, client_id="valve-7"))


def test_bootstrap_entry_never_admits_an_engine_certificate_of_another_device(
        engine: Engine, gate: DeviceGate, pump: DeviceCert) -> None:
    engine.registry.register(group="mqtt-device", name="valve-5", site="north", actor=ACTOR,
                             attributes={"bootstrap": [{"subject_cn": "pump-7"}]})
    identity = admitted(gate.authenticate(pump.chain, client_id="pump-7"))
    assert identity.device == "pump-7" and identity.kind == "operational"
    refused(gate.authenticate(pump.chain, client_id="valve-5"), "client_id_mismatch")


def test_acl_per_topic(gate: DeviceGate, pump: DeviceCert) -> None:
    identity = admitted(gate.authenticate(pump.chain, client_id="pump-7"))
    allow = [
        ("plant/north/pump-7/telemetry", "publish"),
        ("plant/north/pump-7/a/b/c", "publish"),
        ("otpki/enroll/pump-7/csr", "publish"),
        ("plant/north/pump-7/cmd/#", "subscribe"),
        ("plant/north/pump-7/cmd/start", "subscribe"),
        ("plant/north/pump-7/cmd/+", "subscribe"),
        ("otpki/enroll/pump-7/+", "subscribe"),
        ("plant/north/pump-7/cmd/start", "receive"),
        ("otpki/enroll/pump-7/accepted", "receive"),
    ]
    deny = [
        ("plant/north/pump-8/telemetry", "publish"),
        ("plant/south/pump-7/telemetry", "publish"),
        ("plant/north/pump-7/+", "publish"),
        ("plant/north/pump-7/#", "publish"),
        ("otpki/enroll/pump-7/accepted", "publish"),
        ("otpki/enroll/pump-8/csr", "publish"),
        ("", "publish"),
        ("$SYS/broker/uptime", "publish"),
        ("#", "subscribe"),
        ("+/#", "subscribe"),
        ("plant/#", "subscribe"),
        ("plant/+/pump-7/cmd/#", "subscribe"),
        ("plant/north/+/cmd/#", "subscribe"),
        ("plant/north/pump-7/#", "subscribe"),
        ("plant/north/pump-8/cmd/#", "subscribe"),
        ("otpki/enroll/+/csr", "subscribe"),
        ("$SYS/#", "subscribe"),
        ("plant/north/pump-8/cmd/start", "receive"),
        ("plant/north/pump-7/telemetry", "receive"),
        ("otpki/enroll/pump-8/accepted", "receive"),
        ("plant/north/pump-7/cmd/start", "delete"),
    ]
    for topic, action in allow:
        assert gate.authorize(identity, topic, action), (topic, action)  # type: ignore[arg-type]
    for topic, action in deny:
        assert not gate.authorize(identity, topic, action), (topic, action)  # type: ignore[arg-type]


def test_enrollment_service_identity(engine: Engine, gate: DeviceGate, tmp_path: Path) -> None:
    service = issue_device(engine, "enroll-svc", tmp_path, attributes={"role": "enrollment-service"})
    identity = admitted(gate.authenticate(service.chain, client_id="enroll-svc"))
    assert identity.role == "enrollment-service" and identity.kind == "operational"
    assert gate.authorize(identity, "otpki/enroll/+/csr", "subscribe")
    assert gate.authorize(identity, "otpki/enroll/pump-7/csr", "receive")
    assert gate.authorize(identity, "otpki/enroll/pump-7/accepted", "publish")
    assert gate.authorize(identity, "otpki/enroll/pump-7/rejected", "publish")
    assert not gate.authorize(identity, "otpki/enroll/#", "subscribe")
    assert not gate.authorize(identity, "otpki/enroll/pump-7/csr", "publish")
    assert not gate.authorize(identity, "otpki/enroll/+/accepted", "publish")
    assert not gate.authorize(identity, "plant/north/enroll-svc/telemetry", "publish")
    assert not gate.authorize(identity, "plant/#", "subscribe")


def test_identity_from_san_uri(tmp_path: Path) -> None:
    config = mqtt_config()
    group = config.group("mqtt-device")
    fronts = {**group.fronts, "mqtt": {**group.fronts["mqtt"], "identity_source": "san_uri"}}
    config = config.model_copy(update={"groups": {**config.groups,
                                                  "mqtt-device": group.model_copy(update={"fronts": fronts})}})
    engine = make_engine(tmp_path / "pki-uri", config=config)
    try:
        engine.hierarchy.initialize(actor=ACTOR)
        pump = issue_device(engine, "pump-9", tmp_path / "certs")
        identity = admitted(DeviceGate(engine).authenticate(pump.chain, client_id="pump-9"))
        assert identity.device == "pump-9"
    finally:
        engine.close()
