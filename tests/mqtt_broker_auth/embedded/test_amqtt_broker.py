"""The embedded amqtt broker with otpki's plugins, driven by real paho-mqtt clients over mTLS (MQTT 3.1.1)."""

from __future__ import annotations

import asyncio
import queue
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mqtt_broker_auth.embedded.amqtt_plugin import identity_of
from mqtt_broker_auth.embedded.broker import EmbeddedBroker
from tests.mqtt_broker_auth.conftest import (
    ACTOR,
    DeviceCert,
    advance,
    issue_device,
    make_external_ca,
    make_external_leaf,
    mqtt_config,
)
from trustlists.engine import Engine
from trustlists.models import RevocationReason
from trustlists.testing import Clock, eventually, make_engine

NOT_AUTHORIZED = 135
WAIT = 15.0  # generous upper bound for any single broker round trip on a loaded 2-core machine


@dataclass
class Outcome:
    kind: str  # "connack" (rc in .rc) or "dropped" (connection closed without a CONNACK: refused at TLS)
    rc: int | None = None
    session_present: bool = False


class Client:
    """A paho-mqtt 3.1.1 client whose callbacks feed queues the test can wait on (from a worker thread)."""

    def __init__(self, port: int, server_ca: Path, cert: DeviceCert | None, client_id: str,
                 clean_session: bool = True) -> None:
        self.port = port
        # reconnect_on_failure=False: a test decides about reconnects (paho's own would add refusals the test
        # counts, and keep its loop thread in a one-second back-off that close() then waits out).
        self.mqtt = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                                clean_session=clean_session, reconnect_on_failure=False)
        self.mqtt.tls_set(ca_certs=str(server_ca), certfile=str(cert.cert_file) if cert else None,
                          keyfile=str(cert.key_file) if cert else None, cert_reqs=ssl.CERT_REQUIRED)
        self.connacks: queue.Queue[tuple[int, bool]] = queue.Queue()
        self.subacks: queue.Queue[list[int]] = queue.Queue()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.disconnected = threading.Event()
        self.mqtt.on_connect = lambda c, u, flags, rc, p: self.connacks.put((rc.value, flags.session_present))
        self.mqtt.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put([rc.value for rc in rcs])
        self.mqtt.on_message = lambda c, u, msg: self.messages.put((msg.topic, msg.payload))
        self.mqtt.on_disconnect = lambda c, u, flags, rc, p: self.disconnected.set()
        self._started = False

    def connect(self) -> Outcome:
        try:
            self.mqtt.connect("127.0.0.1", self.port, keepalive=60)
        except (ssl.SSLError, ConnectionError, OSError):
            return Outcome("dropped")  # TLS 1.2 style: the handshake itself failed
        self.mqtt.loop_start()
        self._started = True
        # TLS 1.3 style: the client's handshake returns before the server has checked the client certificate;
        # the refusal arrives as an alert on the first read, i.e. a disconnect without CONNACK.
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                rc, present = self.connacks.get(timeout=0.05)
                return Outcome("connack", rc, present)
            except queue.Empty:
                if self.disconnected.is_set() and self.connacks.empty():
                    return Outcome("dropped")
        raise AssertionError(f"neither CONNACK nor disconnect within {WAIT:g} s")

    def subscribe(self, *filters: str) -> list[int]:
        self.mqtt.subscribe([(f, 1) for f in filters])
        return self.subacks.get(timeout=WAIT)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        info = self.mqtt.publish(topic, payload, qos=qos)
        info.wait_for_publish(timeout=WAIT)

    def next_message(self) -> tuple[str, bytes]:
        return self.messages.get(timeout=WAIT)

    def close(self) -> None:
        try:
            self.mqtt.disconnect()
        finally:
            if self._started:
                self.mqtt.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


@pytest.fixture
async def broker(engine: Engine, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[EmbeddedBroker]:
    require = getattr(request, "param", True)
    embedded = EmbeddedBroker(engine, workdir=tmp_path / "broker", require_certificate=require,
                              revocation_interval=0.1)
    await embedded.start()
    yield embedded
    await embedded.stop()


@pytest.fixture
def server_ca(broker: EmbeddedBroker, tmp_path: Path) -> Path:
    path = tmp_path / "server-ca.pem"
    path.write_bytes(broker.server_ca_pem())
    return path


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    return tmp_path / "certs"


async def connect(clients: list[Client], broker: EmbeddedBroker, server_ca: Path, cert: DeviceCert | None,
                  client_id: str, clean_session: bool = True) -> tuple[Client, Outcome]:
    client = Client(broker.port, server_ca, cert, client_id, clean_session)
    clients.append(client)
    return client, await asyncio.to_thread(client.connect)


async def connected(clients: list[Client], broker: EmbeddedBroker, server_ca: Path, cert: DeviceCert,
                    client_id: str, clean_session: bool = True) -> Client:
    client, outcome = await connect(clients, broker, server_ca, cert, client_id, clean_session)
    assert outcome.kind == "connack" and outcome.rc == 0, outcome
    return client


def refused_with(broker: EmbeddedBroker, outcome: Outcome, reason: str) -> None:
    # MQTT 3.1.1 return code 5 (not authorized); paho 2 reports it as the v5 reason code 135 "Not authorized".
    assert outcome.kind == "connack" and outcome.rc == NOT_AUTHORIZED, outcome
    assert broker.broker is not None and broker.broker.refusals[-1].reason == reason, list(broker.broker.refusals)


def dropped_at_tls(broker: EmbeddedBroker, outcome: Outcome, refusals_before: int, reason: str | None = None,
                   layer: str | None = None) -> None:
    """Closed during or right after the TLS handshake: no CONNACK, the CONNECT never read, and the listener
    says which layer refused it for which reason."""
    assert outcome.kind == "dropped", outcome
    assert broker.broker is not None and len(broker.broker.refusals) == refusals_before  # CONNECT never read
    if reason is not None:
        last = broker.broker.tls_refusals[-1]
        assert last.reason == reason and (layer is None or last.layer == layer), list(broker.broker.tls_refusals)


# -- admission ---------------------------------------------------------------------------------------------------

async def test_valid_device_connects_and_uses_its_topics(engine: Engine, broker: EmbeddedBroker, server_ca: Path,
                                                         certs: Path, clients: list[Client]) -> None:
    pump = issue_device(engine, "pump-7", certs)
    client = await connected(clients, broker, server_ca, pump, "pump-7")
    assert await asyncio.to_thread(client.subscribe, "plant/north/pump-7/cmd/#") == [1]
    await asyncio.to_thread(client.publish, "plant/north/pump-7/cmd/start", b"go")
    assert await asyncio.to_thread(client.next_message) == ("plant/north/pump-7/cmd/start", b"go")
    assert broker.broker is not None
    session = broker.broker.sessions["pump-7"][0]
    assert session.username == "pump-7" and identity_of(session).device == "pump-7"  # type: ignore[union-attr]
    assert broker.keyfile.stat().st_mode & 0o777 == 0o600


async def test_broker_keeps_its_certificate_across_restarts(engine: Engine, tmp_path: Path) -> None:
    first = EmbeddedBroker(engine, workdir=tmp_path / "b")
    await first.start()
    await first.stop()
    issued = (tmp_path / "b" / "broker.crt").read_bytes()
    async with EmbeddedBroker(engine, workdir=tmp_path / "b") as second:
        assert second.port > 0
        assert second.certfile.read_bytes() == issued  # still current: not reissued


async def test_will_on_a_foreign_topic_is_refused(engine: Engine, broker: EmbeddedBroker, server_ca: Path,
                                                  certs: Path, clients: list[Client]) -> None:
    # amqtt publishes a will without any topic check; the gate checks it at CONNECT like a PUBLISH.
    pump = issue_device(engine, "pump-7", certs)
    client = Client(broker.port, server_ca, pump, "pump-7")
    client.mqtt.will_set("plant/north/pump-8/cmd/stop", b"evil")
    clients.append(client)
    refused_with(broker, await asyncio.to_thread(client.connect), "will_topic_denied")


async def test_refused_devices(engine: Engine, broker: EmbeddedBroker, server_ca: Path, certs: Path,
                               clients: list[Client], clock: Clock, tmp_path: Path) -> None:
    assert broker.broker is not None
    before = len(broker.broker.refusals)
    revoked = issue_device(engine, "pump-1", certs)
    engine.authority.revoke(revoked.serial_hex, reason=RevocationReason.KEY_COMPROMISE, actor=ACTOR)
    _, outcome = await connect(clients, broker, server_ca, revoked, "pump-1")
    dropped_at_tls(broker, outcome, before, "revoked")  # OpenSSL's CRL or the handshake check, whichever is first

    valid = issue_device(engine, "pump-2", certs)
    _, outcome = await connect(clients, broker, server_ca, valid, "pump-3")
    refused_with(broker, outcome, "client_id_mismatch")  # only the CONNECT carries the client id

    rogue = make_external_leaf(tmp_path / "rogue", "pump-2", ca=make_external_ca("Rogue CA"))
    before = len(broker.broker.refusals)
    _, outcome = await connect(clients, broker, server_ca, rogue, "pump-2")
    dropped_at_tls(broker, outcome, before, "untrusted", "openssl")  # a chain outside the trust list

    _, outcome = await connect(clients, broker, server_ca, None, "pump-2")
    dropped_at_tls(broker, outcome, before, "no_certificate", "openssl")  # the listener requires one

    # Expiry on the engine's clock (OpenSSL uses the wall clock, so this reaches the handshake check).
    advance(clock, days=366)
    _, outcome = await connect(clients, broker, server_ca, valid, "pump-2")
    dropped_at_tls(broker, outcome, before, "expired", "handshake_check")
    assert "pump-2" not in broker.broker.sessions and "pump-3" not in broker.broker.sessions


@pytest.mark.parametrize("broker", [False], indirect=True)
async def test_no_certificate_gets_connack_not_authorized_when_tls_lets_it_through(
        broker: EmbeddedBroker, server_ca: Path, clients: list[Client]) -> None:
    _, outcome = await connect(clients, broker, server_ca, None, "pump-2")
    refused_with(broker, outcome, "no_certificate")
    assert broker.broker is not None and "pump-2" not in broker.broker.sessions


async def test_bootstrap_identity_only_reaches_enrollment_topics(engine: Engine, broker: EmbeddedBroker,
                                                                 server_ca: Path, clients: list[Client],
                                                                 tmp_path: Path) -> None:
    acme = make_external_ca()
    engine.trustlists.import_external("mqtt-device", acme.pem, list_name="trusted", note="ACME", actor=ACTOR)
    engine.registry.register(group="mqtt-device", name="valve-1", site="north", actor=ACTOR,
                             attributes={"bootstrap": [{"subject_cn": "ACME-SN-1"}]})
    idevid = make_external_leaf(tmp_path / "acme", "ACME-SN-1", ca=acme)
    # The watcher loads the new CA into the running listener; until then OpenSSL drops the handshake.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while True:
        client, outcome = await connect(clients, broker, server_ca, idevid, "valve-1")
        if outcome.kind == "connack" or loop.time() > deadline:
            break
        await asyncio.sleep(0.1)
    assert outcome.rc == 0, outcome
    assert await asyncio.to_thread(client.subscribe, "otpki/enroll/valve-1/+", "plant/north/valve-1/cmd/#") \
        == [1, 0x80]


# -- authorization -----------------------------------------------------------------------------------------------

async def test_acl_suback_and_delivery(engine: Engine, broker: EmbeddedBroker, server_ca: Path, certs: Path,
                                       clients: list[Client]) -> None:
    pump7 = await connected(clients, broker, server_ca, issue_device(engine, "pump-7", certs), "pump-7")
    pump8 = await connected(clients, broker, server_ca, issue_device(engine, "pump-8", certs), "pump-8")
    codes = await asyncio.to_thread(pump7.subscribe, "plant/north/pump-7/cmd/#", "plant/north/pump-8/cmd/#", "#",
                                    "plant/+/pump-7/cmd/#", "plant/north/+/cmd/#")
    assert codes == [1, 0x80, 0x80, 0x80, 0x80]
    assert await asyncio.to_thread(pump8.subscribe, "plant/north/pump-8/cmd/#") == [1]
    # pump-7 writing into pump-8's command topic is dropped; pump-8's own message behind it arrives.
    await asyncio.to_thread(pump7.publish, "plant/north/pump-8/cmd/stop", b"evil")
    await asyncio.to_thread(pump8.publish, "plant/north/pump-8/cmd/ping", b"ok")
    assert await asyncio.to_thread(pump8.next_message) == ("plant/north/pump-8/cmd/ping", b"ok")
    assert pump8.messages.empty() and pump7.messages.empty()


# -- live revocation ---------------------------------------------------------------------------------------------

async def test_revoked_while_connected_is_disconnected_and_refused(engine: Engine, broker: EmbeddedBroker,
                                                                  server_ca: Path, certs: Path,
                                                                  clients: list[Client], tmp_path: Path) -> None:
    pump = issue_device(engine, "pump-7", certs)
    client = await connected(clients, broker, server_ca, pump, "pump-7", clean_session=False)
    assert await asyncio.to_thread(client.subscribe, "plant/north/pump-7/cmd/#") == [1]

    def revoke_elsewhere() -> None:
        # Another Engine on the same SQLite file: what `otpki certs revoke` does from another process.
        other = make_engine(tmp_path / "pki", config=mqtt_config())
        try:
            other.authority.revoke(pump.serial_hex, reason=RevocationReason.KEY_COMPROMISE, actor="cli")
        finally:
            other.close()

    await asyncio.to_thread(revoke_elsewhere)
    assert await asyncio.to_thread(client.disconnected.wait, WAIT)
    assert broker.broker is not None and "pump-7" not in broker.broker.sessions
    client.close()
    _, outcome = await connect(clients, broker, server_ca, pump, "pump-7", clean_session=False)
    dropped_at_tls(broker, outcome, len(broker.broker.refusals), "revoked")


async def test_expired_while_connected_is_disconnected(engine: Engine, broker: EmbeddedBroker, server_ca: Path,
                                                       certs: Path, clients: list[Client], clock: Clock) -> None:
    client = await connected(clients, broker, server_ca, issue_device(engine, "pump-7", certs), "pump-7")
    advance(clock, days=366)
    assert await asyncio.to_thread(client.disconnected.wait, WAIT)


# -- amqtt's flaws -----------------------------------------------------------------------------------------------

async def _victim(engine: Engine, broker: EmbeddedBroker, server_ca: Path, certs: Path,
                  clients: list[Client]) -> tuple[DeviceCert, Client]:
    pump = issue_device(engine, "pump-7", certs)
    victim = await connected(clients, broker, server_ca, pump, "pump-7", clean_session=False)
    assert await asyncio.to_thread(victim.subscribe, "plant/north/pump-7/cmd/#") == [1]
    return pump, victim


async def _victim_still_served(victim: Client, marker: bytes) -> None:
    assert not victim.disconnected.is_set()
    await asyncio.to_thread(victim.publish, "plant/north/pump-7/cmd/after", marker)
    assert await asyncio.to_thread(victim.next_message) == ("plant/north/pump-7/cmd/after", marker)


@pytest.mark.parametrize("broker", [True, False], indirect=True, ids=["tls-requires-cert", "cert-optional"])
@pytest.mark.parametrize("clean_session", [False, True], ids=["resume-session", "clean-session"])
async def test_certless_client_cannot_take_or_wipe_a_device_session(
        engine: Engine, broker: EmbeddedBroker, server_ca: Path, certs: Path, clients: list[Client],
        clean_session: bool) -> None:
    """(a) clean_session=0 with the victim's client id and no certificate; (b) the same with clean_session=1."""
    _, victim = await _victim(engine, broker, server_ca, certs, clients)
    assert broker.broker is not None
    before = len(broker.broker.refusals)
    _, outcome = await connect(clients, broker, server_ca, None, "pump-7", clean_session=clean_session)
    if broker.broker.require_certificate:
        dropped_at_tls(broker, outcome, before)
    else:
        refused_with(broker, outcome, "no_certificate")
    await _victim_still_served(victim, b"still-mine")
    session = broker.broker.sessions["pump-7"][0]  # (c) still the victim's, connected, with its identity
    assert session.transitions.state == "connected" and identity_of(session).device == "pump-7"  # type: ignore[union-attr]


@pytest.mark.parametrize("clean_session", [False, True], ids=["resume-session", "clean-session"])
async def test_other_device_certificate_cannot_take_or_wipe_a_device_session(
        engine: Engine, broker: EmbeddedBroker, server_ca: Path, certs: Path, clients: list[Client],
        clean_session: bool) -> None:
    """The same attacks with a valid certificate of another device: the gate is what refuses them."""
    _, victim = await _victim(engine, broker, server_ca, certs, clients)
    other = issue_device(engine, "pump-8", certs)
    _, outcome = await connect(clients, broker, server_ca, other, "pump-7", clean_session=clean_session)
    refused_with(broker, outcome, "client_id_mismatch")
    await _victim_still_served(victim, b"still-mine")
    assert broker.broker is not None and "pump-8" not in broker.broker.sessions


@pytest.mark.parametrize("broker", [False], indirect=True)
async def test_stored_offline_session_is_not_resumed_without_the_certificate(
        engine: Engine, broker: EmbeddedBroker, server_ca: Path, certs: Path, clients: list[Client]) -> None:
    """(a) with the victim offline: its stored session (and old TLS object) must not admit a certless client."""
    pump, victim = await _victim(engine, broker, server_ca, certs, clients)
    victim.close()
    assert broker.broker is not None
    await eventually(lambda: broker.broker.sessions["pump-7"][0].transitions.state == "disconnected",  # type: ignore[union-attr]
                     "the victim's session to go offline", timeout=WAIT)
    _, outcome = await connect(clients, broker, server_ca, None, "pump-7", clean_session=False)
    refused_with(broker, outcome, "no_certificate")
    back, outcome = await connect(clients, broker, server_ca, pump, "pump-7", clean_session=False)
    assert outcome.kind == "connack" and outcome.rc == 0 and outcome.session_present, outcome
    await _victim_still_served(back, b"resumed")


async def test_subscription_table_survives_changes_while_it_is_walked() -> None:
    from mqtt_broker_auth._amqtt_compat import SnapshotSubscriptions
    from mqtt_broker_auth.embedded.amqtt_plugin import DeviceGateBroker

    table = SnapshotSubscriptions({"a/#": [], "b/#": []})
    walked = []
    for topic, _subs in table.items():  # what amqtt's broadcast loop does, with a SUBSCRIBE landing meanwhile
        table[f"{topic}/new"] = []
        walked.append(topic)
    for topic in table:
        table.pop("b/#", None)
        walked.append(topic)
    assert walked[:2] == ["a/#", "b/#"] and "b/#" not in table
    broker = DeviceGateBroker({"listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:0"}}}, gate=None)
    assert isinstance(broker._subscriptions, SnapshotSubscriptions)
