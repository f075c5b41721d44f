"""Contract tests of mqtt_broker_auth/_amqtt_compat.py against the real amqtt: one per hook and operation.

Each drives a real amqtt broker (HookedBroker, plain TCP on 127.0.0.1 port 0) with a minimal MQTT 3.1.1 client
written here over asyncio streams, so every byte on the wire is known. Each test would fail if amqtt kept the
private name the gate uses but stopped doing what the gate relies on (called it at another point, rebuilt the
table, copied different fields), and most also show the amqtt behaviour the hook exists to change.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import pytest
from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from mqtt_broker_auth import _amqtt_compat as compat
from mqtt_broker_auth._amqtt_compat import AmqttIncompatible, HookedBroker, SnapshotSubscriptions
from trustlists.testing import eventually

WAIT = 10.0  # upper bound for one broker round trip on a loaded machine
CONNACK, SUBACK, PUBLISH = 0x20, 0x90, 0x30
REFUSED_PREFIX = "refused-"


# -- plugins, by dotted path as amqtt loads them ---------------------------------------------------------------------

class MarkedAuth(BaseAuthPlugin):
    """Admits every client except those whose client id starts with "refused-" or who log in as "intruder"."""

    async def authenticate(self, *, session: Session) -> bool | None:
        return not (session.client_id or "").startswith(REFUSED_PREFIX) and session.username != "intruder"


class TableChangingTopics(BaseTopicPlugin):
    """Allows everything; while checking the first RECEIVE it adds a filter to the subscription table, as a
    SUBSCRIBE landing during amqtt's delivery loop does."""

    changed = False

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool | None:
        if action == Action.RECEIVE and not TableChangingTopics.changed:
            TableChangingTopics.changed = True
            self.context.subscriptions["late/#"] = []
        return True


AUTH = f"{__name__}.MarkedAuth"
TOPICS = f"{__name__}.TableChangingTopics"


def config(*plugins: str) -> dict[str, Any]:
    return {"listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:0"}},
            "plugins": {p: {} for p in (AUTH, *plugins)}}


# -- a minimal MQTT 3.1.1 client -------------------------------------------------------------------------------------

def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _remaining_length(len(body)) + body


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.publishes: list[tuple[str, bytes]] = []

    @classmethod
    async def open(cls, port: int) -> RawClient:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)
        return cls(reader, writer)

    @property
    def local_port(self) -> int:
        return int(self.writer.get_extra_info("sockname")[1])

    async def read_packet(self) -> tuple[int, bytes] | None:
        """(type nibble << 4, body), or None when the broker closed the connection."""
        try:
            first = (await asyncio.wait_for(self.reader.readexactly(1), WAIT))[0]
            length, shift = 0, 0
            while True:
                byte = (await self.reader.readexactly(1))[0]
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            return first & 0xF0, await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def expect(self, kind: int) -> bytes:
        while True:
            packet = await self.read_packet()
            assert packet is not None, f"connection closed while waiting for packet type {kind:#x}"
            if packet[0] == PUBLISH:
                body = packet[1]
                n = int.from_bytes(body[:2], "big")
                self.publishes.append((body[2:2 + n].decode(), body[2 + n:]))
            if packet[0] == kind:
                return packet[1]

    async def connect(self, client_id: str, *, clean: bool = True,
                      username: str | None = None) -> tuple[bool, int] | None:
        """(session present, return code), or None when the broker dropped the connection without a CONNACK."""
        flags = (0x02 if clean else 0x00) | (0x80 if username is not None else 0x00)
        variable = _string("MQTT") + bytes([4, flags]) + (60).to_bytes(2, "big")
        payload = _string(client_id) + (_string(username) if username is not None else b"")
        self.writer.write(_packet(0x10, variable + payload))
        await self.writer.drain()
        packet = await self.read_packet()
        if packet is None:
            return None
        assert packet[0] == CONNACK, packet
        return bool(packet[1][0] & 1), packet[1][1]

    async def subscribe(self, topic_filter: str, qos: int = 1) -> int:
        self.writer.write(_packet(0x82, (1).to_bytes(2, "big") + _string(topic_filter) + bytes([qos])))
        await self.writer.drain()
        return (await self.expect(SUBACK))[2]

    async def publish(self, topic: str, payload: bytes) -> None:
        self.writer.write(_packet(PUBLISH, _string(topic) + payload))  # QoS 0
        await self.writer.drain()

    async def next_publish(self) -> tuple[str, bytes]:
        if not self.publishes:
            await self.expect(PUBLISH)
        return self.publishes.pop(0)

    async def disconnect(self) -> None:
        self.writer.write(b"\xe0\x00")
        await self.writer.drain()
        await self.closed()

    async def closed(self) -> bool:
        """True once the broker has closed the connection (within WAIT)."""
        while (packet := await self.read_packet()) is not None:
            if packet[0] == PUBLISH:
                continue
        return True

    def close(self) -> None:
        self.writer.close()



# -- fixtures ----------------------------------------------------------------------------------------------------

Start = Callable[..., Awaitable[HookedBroker]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    brokers: list[Broker] = []
    clients: list[RawClient] = []

    async def run(cls: type[HookedBroker] = HookedBroker, *plugins: str) -> HookedBroker:
        broker = cls(config(*plugins))
        await broker.start()
        brokers.append(broker)
        return broker

    run.clients = clients  # type: ignore[attr-defined]
    yield run
    for client in clients:
        client.close()
    for broker in brokers:
        if broker.transitions.state == "started":
            await broker.shutdown()


async def client(start: Start, broker: HookedBroker) -> RawClient:
    made = await RawClient.open(broker.bound_port())
    start.clients.append(made)  # type: ignore[attr-defined]
    return made


async def stored_subscriber(start: Start, broker: HookedBroker, client_id: str, topic_filter: str) -> None:
    """A CleanSession=0 session with one subscription, stored in the table after its client disconnected."""
    device = await client(start, broker)
    assert await device.connect(client_id, clean=False) == (False, 0)
    assert await device.subscribe(topic_filter) == 1
    await device.disconnect()
    await eventually(lambda: broker.stored_session(client_id) is not None
                and broker.stored_session(client_id).transitions.state == "disconnected",  # type: ignore[union-attr]
                "the disconnected session is stored")


def subscribers(broker: HookedBroker, topic_filter: str) -> list[str]:
    return [s.client_id or "" for s, _qos in broker.subscriptions.get(topic_filter, [])]


# -- the contract tests ------------------------------------------------------------------------------------------

async def test_on_accept_runs_for_each_tcp_connection_before_any_mqtt_byte(start: Start) -> None:
    class Accepting(HookedBroker):
        accepted: ClassVar[list[str]] = []

        async def on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            listener_name: str) -> None:
            Accepting.accepted.append(listener_name)
            await super().on_accept(reader, writer, listener_name)

    broker = await start(Accepting)
    device = await client(start, broker)
    await eventually(lambda: len(Accepting.accepted) == 1, "on_accept for the bare TCP connection")
    assert Accepting.accepted == ["default"]  # before the client sent a byte
    assert await device.connect("dev-1") == (False, 0)  # serve_connection: amqtt's own session follows
    assert broker.stored_session("dev-1") is not None


async def test_on_connect_decides_before_amqtt_changes_the_session_table(start: Start) -> None:
    class Gate(HookedBroker):
        refuse = False

        async def on_connect(self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str,
                             remote_port: int) -> tuple[BrokerProtocolHandler, Session]:
            if not Gate.refuse:
                return await self.amqtt_connect(reader, writer, remote_address, remote_port)
            await BrokerProtocolHandler.init_from_connect(reader, writer, self.plugins_manager)
            await writer.close()
            raise AMQTTError("refused by the test gate")

    broker = await start(Gate)
    await stored_subscriber(start, broker, "victim", "plant/#")

    Gate.refuse = True  # a CleanSession=1 CONNECT with the victim's id, refused in on_connect
    assert await (await client(start, broker)).connect("victim", clean=True) is None
    assert subscribers(broker, "plant/#") == ["victim"]  # the stored session and its subscription are untouched

    Gate.refuse = False  # amqtt's own CONNECT handling deletes them before anyone is authenticated (flaw (b))
    intruder = await client(start, broker)
    assert await intruder.connect("victim", clean=True, username="intruder") == (False, 5)
    assert subscribers(broker, "plant/#") == []


async def test_on_authenticated_receives_the_plugins_verdict(start: Start) -> None:
    class Verdicts(HookedBroker):
        seen: ClassVar[list[tuple[str, bool]]] = []

        def on_authenticated(self, session: Session, authenticated: bool) -> None:
            Verdicts.seen.append((session.client_id or "", authenticated))

    broker = await start(Verdicts)
    assert await (await client(start, broker)).connect("dev-ok") == (False, 0)
    assert await (await client(start, broker)).connect(f"{REFUSED_PREFIX}dev") == (False, 5)
    assert Verdicts.seen == [("dev-ok", True), (f"{REFUSED_PREFIX}dev", False)]


async def test_on_connection_end_sees_a_refused_session_left_in_the_table(start: Start) -> None:
    class Ends(HookedBroker):
        ended: ClassVar[list[tuple[str, bool]]] = []
        clean_up = False

        async def on_connection_end(self, session: Session) -> None:
            client_id = session.client_id or ""
            Ends.ended.append((client_id, self.stored_session(client_id) is session))
            if Ends.clean_up:
                await self.end_session(client_id)

    broker = await start(Ends)
    refused = await client(start, broker)
    assert await refused.connect(f"{REFUSED_PREFIX}1") == (False, 5)
    await eventually(lambda: len(Ends.ended) == 1, "on_connection_end after the refusal")
    # amqtt leaves the refused session in its table (flaw (c)); the hook runs while it is still there.
    assert Ends.ended == [(f"{REFUSED_PREFIX}1", True)]
    assert broker.stored_session(f"{REFUSED_PREFIX}1") is not None

    Ends.clean_up = True
    assert await (await client(start, broker)).connect(f"{REFUSED_PREFIX}2") == (False, 5)
    await eventually(lambda: len(Ends.ended) == 2, "on_connection_end after the second refusal")
    assert broker.stored_session(f"{REFUSED_PREFIX}2") is None

    device = await client(start, broker)
    assert await device.connect("dev-1") == (False, 0)
    await device.disconnect()
    await eventually(lambda: len(Ends.ended) == 3, "on_connection_end after a DISCONNECT")
    assert Ends.ended[2][0] == "dev-1"


async def test_stored_session_is_the_table_entry_amqtt_resumes(start: Start) -> None:
    broker = await start()
    assert broker.stored_session("dev-1") is None
    await stored_subscriber(start, broker, "dev-1", "a/#")
    stored = broker.stored_session("dev-1")
    assert stored is not None and stored.client_id == "dev-1"
    again = await client(start, broker)
    assert await again.connect("dev-1", clean=False) == (True, 0)
    assert broker.stored_session("dev-1") is stored  # amqtt resumed exactly this object


async def test_discard_session_forgets_the_session_and_its_subscriptions(start: Start) -> None:
    broker = await start()
    await stored_subscriber(start, broker, "dev-1", "a/#")
    await broker.discard_session("dev-1")
    assert broker.stored_session("dev-1") is None and subscribers(broker, "a/#") == []
    again = await client(start, broker)
    assert await again.connect("dev-1", clean=False) == (False, 0)  # nothing left to resume


async def test_end_session_closes_the_connection_and_drops_the_session(start: Start) -> None:
    broker = await start()
    device = await client(start, broker)
    assert await device.connect("dev-1") == (False, 0)
    assert await device.subscribe("a/#") == 1
    await broker.end_session("dev-1")
    assert await device.closed()
    assert broker.stored_session("dev-1") is None and subscribers(broker, "a/#") == []


async def test_end_session_closes_the_connection_when_the_readers_cancellation_is_lost(start: Start) -> None:
    """Python 3.11's wait_for loses a cancellation that meets a completing read (bpo-42130); amqtt's handler then
    waits for its reader forever. Simulated here by a reader task that ignores cancel(): end_session must still
    close the socket (the reader then ends on EOF) and finish."""
    broker = await start()
    device = await client(start, broker)
    assert await device.connect("dev-1") == (False, 0)
    entry = broker._sessions["dev-1"]
    handler = entry[1]
    assert handler is not None and handler._reader_task is not None
    handler._reader_task.cancel = lambda *args, **kwargs: False  # type: ignore[method-assign]  # the lost cancel
    await asyncio.wait_for(broker.end_session("dev-1"), 20)
    assert await device.closed()
    assert broker.stored_session("dev-1") is None


async def test_bound_port_is_the_port_the_listener_accepts_on(start: Start) -> None:
    broker = await start()
    port = broker.bound_port()
    assert port > 0  # bound to port 0: the OS picked it
    device = await RawClient.open(port)
    start.clients.append(device)  # type: ignore[attr-defined]
    assert await device.connect("dev-1") == (False, 0)


async def test_amqtt_delivers_from_the_snapshot_table_while_it_changes(start: Start) -> None:
    TableChangingTopics.changed = False
    broker = await start(HookedBroker, TOPICS)
    assert isinstance(broker.subscriptions, SnapshotSubscriptions)  # still ours after start()
    first, second = await client(start, broker), await client(start, broker)
    assert await first.connect("sub-1") == (False, 0) and await first.subscribe("t/#", qos=0) == 0
    assert await second.connect("sub-2") == (False, 0) and await second.subscribe("t/+", qos=0) == 0
    assert subscribers(broker, "t/#") == ["sub-1"]  # amqtt's SUBSCRIBE wrote into the snapshot table

    publisher = await client(start, broker)
    assert await publisher.connect("pub") == (False, 0)
    await publisher.publish("t/a", b"hello")
    # The topic plugin added a filter while amqtt walked the table: with a plain dict the walk raised and the
    # second subscriber never got the message.
    assert await first.next_publish() == ("t/a", b"hello")
    assert await second.next_publish() == ("t/a", b"hello")
    assert TableChangingTopics.changed and "late/#" in broker.subscriptions


async def test_take_connection_gives_a_resumed_session_this_connections_fields(start: Start) -> None:
    class Resuming(HookedBroker):
        use_take_connection = True

        async def on_connect(self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str,
                             remote_port: int) -> tuple[BrokerProtocolHandler, Session]:
            stored = self.stored_session("dev-1")
            if not Resuming.use_take_connection or stored is None:
                return await self.amqtt_connect(reader, writer, remote_address, remote_port)
            handler, connecting = await BrokerProtocolHandler.init_from_connect(reader, writer, self.plugins_manager)
            compat.take_connection(stored, connecting)
            stored.parent = 1
            return handler, stored

    broker = await start(Resuming)
    await stored_subscriber(start, broker, "dev-1", "a/#")
    first_port = broker.stored_session("dev-1").remote_port  # type: ignore[union-attr]

    Resuming.use_take_connection = False  # amqtt's own resume keeps the earlier connection's fields (amqtt#389)
    amqtt_resumed = await client(start, broker)
    assert await amqtt_resumed.connect("dev-1", clean=False) == (True, 0)
    assert broker.stored_session("dev-1").remote_port == first_port  # type: ignore[union-attr]
    await amqtt_resumed.disconnect()

    Resuming.use_take_connection = True
    ours = await client(start, broker)
    assert await ours.connect("dev-1", clean=False) == (True, 0)
    assert broker.stored_session("dev-1").remote_port == ours.local_port != first_port  # type: ignore[union-attr]


def test_the_import_check_names_the_version_it_was_written_for(monkeypatch: pytest.MonkeyPatch) -> None:
    compat._check()  # the installed amqtt passes
    monkeypatch.delattr(Broker, "_cleanup_session")
    with pytest.raises(AmqttIncompatible, match=r"written for amqtt 0\.12\.1; amqtt 0\.12\.1 has no "
                                                 r"Broker\._cleanup_session"):
        compat._check()
    monkeypatch.undo()
    monkeypatch.setattr(Broker, "_delete_session", lambda self, client_id, now: None)
    with pytest.raises(AmqttIncompatible, match=r"changed Broker\._delete_session"):
        compat._check()


def test_a_subclass_cannot_shadow_an_amqtt_name() -> None:
    with pytest.raises(AmqttIncompatible, match=r"Broker\._matches, which .*Shadowing would replace"):
        class Shadowing(HookedBroker):
            def _matches(self, topic: str, a_filter: str) -> bool:
                return True
    with pytest.raises(AmqttIncompatible, match=r"Broker\._sessions"):
        class ShadowingState(HookedBroker):
            def __init__(self, config: dict[str, Any]) -> None:
                super().__init__(config)
                self._sessions = {}
