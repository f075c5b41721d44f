"""Every amqtt internal otpki relies on, in one place, checked when this module is imported.

otpki's broker (`mqtt_broker_auth.embedded.amqtt_plugin.DeviceGateBroker`) has to act where amqtt offers no
plugin hook: on the TCP connection before any MQTT byte, on the CONNECT before the session table is read or
changed, after the plugins' verdict, when a connection ends, and on the session table itself (live revocation).
`HookedBroker` overrides amqtt's private methods at exactly those points and turns them into hooks with otpki's
names (`on_accept`, `on_connect`, `on_authenticated`, `on_connection_end`) plus a few operations on the session
table; subclasses never touch an amqtt private name. At import, `_check()` verifies every method, parameter
list and instance attribute used here and raises `AmqttIncompatible` naming the version this module was written
for otherwise; pyproject.toml pins amqtt to that version. tests/mqtt_broker_auth/test_amqtt_compat.py holds one
contract test per hook and operation, against the real library.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import textwrap
from collections.abc import Iterator
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from amqtt.adapters import ReaderAdapter, StreamReaderAdapter, StreamWriterAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.broker import Server as ListenerServer
from amqtt.contexts import ListenerConfig
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session

if TYPE_CHECKING:
    from _collections_abc import dict_items  # the type dict.items() returns (typeshed names it so)

WRITTEN_FOR = "0.12.1"

# What a resumed session takes from the connection that resumes it; the rest (subscriptions, queued messages,
# in-flight packets) is the session itself. amqtt itself does not copy ssl_object (amqtt#389).
PER_CONNECTION_FIELDS = ("will_flag", "will_message", "will_topic", "will_qos", "will_retain", "keep_alive",
                         "username", "password", "ssl_object", "remote_address", "remote_port")


class AmqttIncompatible(ImportError):
    """The installed amqtt lacks something otpki's amqtt gate relies on."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"otpki's amqtt gate (mqtt_broker_auth/_amqtt_compat.py) was written for amqtt {WRITTEN_FOR}; "
                         f"amqtt {version('amqtt')} {problem}")


class SnapshotSubscriptions(dict[str, list[tuple[Session, int]]]):
    """amqtt's subscription table, iterated over a snapshot.

    amqtt loops over its subscription table with awaits inside the loop (delivering a PUBLISH, and retained
    messages to a resumed session); a SUBSCRIBE or disconnect landing meanwhile raised "dictionary changed size
    during iteration" and the message was lost for every remaining subscriber (seen with a few hundred devices
    enrolling at once). Iterating over a copy makes those loops see the table as it was.
    """

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().keys()))

    def items(self) -> dict_items[str, list[tuple[Session, int]]]:
        return dict(super().items()).items()  # the items of a copy: a snapshot that is still a dict's view


class HookedBroker(Broker):
    """amqtt's Broker with its private connection path turned into hooks (see the module docstring).

    The defaults of the hooks do what amqtt does, so a HookedBroker that overrides nothing is amqtt's broker
    (with the snapshot subscription table). A subclass that defines a name amqtt's Broker also has (a method, or
    an attribute its __init__ sets) is refused when the class is created: it would silently replace amqtt's.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        amqtt_names = set(dir(Broker)) | _assigned_in_init(Broker)
        own = {name for name in vars(cls) if not name.startswith("__")}
        if "__init__" in vars(cls):
            own |= _assigned_in_init(cls)
        clashes = sorted(own & amqtt_names)
        if clashes:
            raise AmqttIncompatible(f"has Broker.{', Broker.'.join(clashes)}, which {cls.__qualname__} would "
                                    "replace; rename them in the subclass")

    def __init__(self, config: Any, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        # amqtt reads the table through this attribute everywhere and only ever clears it (start), never rebinds it.
        self._subscriptions: SnapshotSubscriptions = SnapshotSubscriptions(self._subscriptions)

    # -- accept: amqtt's asyncio server calls stream_connected once per accepted TCP connection -------------------

    async def stream_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               listener_name: str) -> None:
        await self.on_accept(reader, writer, listener_name)

    async def on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str) -> None:
        """A TCP connection was accepted; nothing was read from it yet. Default: serve it as amqtt does."""
        await self.serve_connection(listener_name, StreamReaderAdapter(reader), StreamWriterAdapter(writer))

    async def serve_connection(self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        """amqtt's whole life of a connection: CONNECT (on_connect), the plugins, the session's message loop."""
        await self._client_connected(listener_name, reader, writer)

    # -- CONNECT: the one place amqtt reads and changes the session table before any plugin is asked -------------

    async def _initialize_client_session(self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str,
                                         remote_port: int) -> tuple[BrokerProtocolHandler, Session]:
        return await self.on_connect(reader, writer, remote_address, remote_port)

    async def on_connect(self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str,
                         remote_port: int) -> tuple[BrokerProtocolHandler, Session]:
        """Read the CONNECT and pick the session it continues; raise AMQTTError to drop the connection (amqtt
        then forgets it: no CONNACK, no plugin, no session table change). Default: amqtt's own."""
        return await self.amqtt_connect(reader, writer, remote_address, remote_port)

    async def amqtt_connect(self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str,
                            remote_port: int) -> tuple[BrokerProtocolHandler, Session]:
        """amqtt's CONNECT handling: it deletes or resumes the client id's stored session before authentication."""
        return await super()._initialize_client_session(reader, writer, remote_address, remote_port)

    # -- the plugins' verdict, and the end of the connection -------------------------------------------------------

    async def _authenticate(self, session: Session, listener: ListenerConfig) -> bool:
        authenticated = await super()._authenticate(session, listener)
        self.on_authenticated(session, authenticated)
        return authenticated

    def on_authenticated(self, session: Session, authenticated: bool) -> None:
        """What the auth plugins decided for this connection's session (amqtt then sends the CONNACK)."""

    async def _handle_client_session(self, reader: ReaderAdapter, writer: WriterAdapter, client_session: Session,
                                     handler: BrokerProtocolHandler, server: Any, listener_name: str) -> None:
        try:
            await super()._handle_client_session(reader, writer, client_session, handler, server, listener_name)
        finally:
            await self.on_connection_end(client_session)

    async def on_connection_end(self, session: Session) -> None:
        """The connection of `session` is over (refused by the plugins, disconnected, or failed); amqtt keeps the
        session in its table unless something removes it."""

    # -- the session table ---------------------------------------------------------------------------------------

    def stored_session(self, client_id: str) -> Session | None:
        """The session the table holds for `client_id`, connected or not."""
        entry = self._sessions.get(client_id)
        return entry[0] if entry is not None else None

    async def discard_session(self, client_id: str) -> None:
        """Forget a stored session as CleanSession=1 does: drop it, its subscriptions and its queued messages."""
        await self._delete_session(client_id)

    async def end_session(self, client_id: str) -> None:
        """Drop the session and stop its handler, which closes the client's connection and ends its message loop.

        The connection is aborted first. On Python 3.11 `asyncio.wait_for` swallows a cancellation that arrives
        while the awaited read completes (bpo-42130, fixed in 3.12): when a packet comes in at that moment, the
        handler's reader loop goes on reading, amqtt's `stop()` waits for it forever, and the socket of a device
        whose certificate was just revoked stays open. Without its socket the reader ends on EOF either way."""
        entry = self._sessions.get(client_id)
        if entry is not None and entry[1] is not None:
            abort_connection(entry[1].writer)
        await self._cleanup_session(client_id)

    def bound_port(self, listener: str = "default") -> int:
        """The port a started listener is bound to (the OS picks one for port 0)."""
        server = self._servers[listener].instance
        return int(server.sockets[0].getsockname()[1])


def abort_connection(writer: WriterAdapter | None) -> None:
    """Close a connection's socket at once (no flush, no TLS close_notify): for a session being thrown out."""
    if isinstance(writer, StreamWriterAdapter):
        writer._writer.transport.abort()


def take_connection(resumed: Session, connecting: Session) -> None:
    """Give a resumed stored session the parameters and TLS object of the connection that resumes it."""
    for name in PER_CONNECTION_FIELDS:
        setattr(resumed, name, getattr(connecting, name))


# -- the import-time check ------------------------------------------------------------------------------------------

def _require_method(owner: type, name: str, params: list[str]) -> None:
    func = inspect.getattr_static(owner, name, None)
    if func is None:
        raise AmqttIncompatible(f"has no {owner.__name__}.{name}")
    if list(inspect.signature(func).parameters) != params:
        raise AmqttIncompatible(f"changed {owner.__name__}.{name}{inspect.signature(func)}; expected "
                                f"({', '.join(params)})")
    if not inspect.iscoroutinefunction(func):
        raise AmqttIncompatible(f"made {owner.__name__}.{name} synchronous")


def _assigned_in_init(owner: type[object]) -> set[str]:
    """The `self.<name>` attributes `owner.__init__` assigns (instance state cannot be seen on the class)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(owner.__init__)))
    except (OSError, TypeError) as exc:
        raise AmqttIncompatible(f"has no readable source for {owner.__qualname__}.__init__ ({exc})") from exc
    assigned: set[str] = set()
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) else []
        assigned.update(t.attr for t in targets
                        if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self")
    return assigned


def _require_state(owner: type[object], *attributes: str) -> None:
    missing = sorted(set(attributes) - _assigned_in_init(owner))
    if missing:
        raise AmqttIncompatible(f"no longer sets {', '.join(f'{owner.__name__}.{a}' for a in missing)}")


def _check() -> None:
    _require_method(Broker, "stream_connected", ["self", "reader", "writer", "listener_name"])
    _require_method(Broker, "_client_connected", ["self", "listener_name", "reader", "writer"])
    _require_method(Broker, "_initialize_client_session", ["self", "reader", "writer", "remote_address",
                                                           "remote_port"])
    _require_method(Broker, "_authenticate", ["self", "session", "_"])
    _require_method(Broker, "_handle_client_session", ["self", "reader", "writer", "client_session", "handler",
                                                       "server", "listener_name"])
    _require_method(Broker, "_delete_session", ["self", "client_id"])
    _require_method(Broker, "_cleanup_session", ["self", "client_id"])
    _require_state(Broker, "_sessions", "_subscriptions", "_servers")
    _require_state(ListenerServer, "instance")
    _require_state(Session, "client_id", "clean_session", "parent", "attributes", *PER_CONNECTION_FIELDS)
    _require_state(StreamWriterAdapter, "_writer")
    _require_state(BrokerProtocolHandler.__mro__[1], "writer")  # ProtocolHandler: the connection's WriterAdapter


_check()
