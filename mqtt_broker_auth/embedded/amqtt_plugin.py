"""amqtt 0.12.1 on the decision core: an auth plugin, a topic plugin, and a broker that closes amqtt's holes.

Plugins are configured by dotted path in amqtt's `plugins:` map; a `Config` dataclass can only carry plain
data, so the plugins find their `DeviceGate` by name in a process-wide registry (`register_gate`).

    plugins:
      mqtt_broker_auth.embedded.amqtt_plugin.DeviceCertAuthPlugin: {gate: <name>}
      mqtt_broker_auth.embedded.amqtt_plugin.DeviceTopicPlugin: {gate: <name>}

amqtt flaws (../shared/reference/mqtt.md §2) and what defends against each:
(a) A CONNECT with clean_session=0 and a known client id resumes the cached Session, whose `ssl_object`
    is the *previous* connection's; amqtt then authenticates that stale certificate (amqtt#389).
(b) A CONNECT with clean_session=1 deletes the existing session with that client id (subscriptions,
    queued messages) before anyone authenticates it.
(c) A refused CONNECT leaves its session in `Broker._sessions`, marked connected; with clean_session=0 a
    refused client even "takes over" a connected victim's session, disconnecting it.
A plugin cannot fix (b) and (c): amqtt calls plugins only after it has changed the session table. So
`DeviceGateBroker` replaces amqtt's CONNECT handling, where the table changes (the `on_connect` hook of
`mqtt_broker_auth._amqtt_compat.HookedBroker`), with its own: it authenticates the certificate of *this* TLS
connection (`writer.get_ssl_info()`) and the CONNECT's client id and will topic before any session is
looked up, deleted or resumed. A refused client gets CONNACK 5 (not authorized) and its connection is
closed; the session table is never touched. A resumed session gets the new connection's TLS object and
identity. The auth plugin then only confirms that the gate saw this very connection (a one-shot mark per CONNECT);
used on a stock `amqtt.broker.Broker` it authenticates fresh sessions from their own TLS object and refuses
resumed sessions, whose TLS object it cannot trust (fail closed: no clean_session=0 resumption there), but
(b) and (c) need `DeviceGateBroker`. Every amqtt private name it relies on is in `_amqtt_compat`.
Also closed here: amqtt publishes a client's will message without any topic check, so the will topic is
authorized at CONNECT like a PUBLISH.

Before authentication amqtt spends without limit: (d) asyncio's TLS server waits 60 s for a handshake and
amqtt then waits for a CONNECT forever; (e) a packet is read whole, at any announced size up to 256 MB;
(f) any number of connections may wait like that. `DeviceGateBroker` therefore takes every TCP connection
itself (`on_accept`): it refuses it at once when `max_unauthenticated` connections are already
between accept and an authenticated CONNECT, does the TLS handshake with the listener's current context
(`listener_tls`) and the handshake check (`tls_admission`) before any MQTT byte is read, reads packets through
`PacketLimitReader`, and closes a connection whose CONNECT has not arrived `connect_timeout_s` after accept.
In `mode="bootstrap"` it admits only bootstrap identities and the enrollment service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from amqtt.adapters import ReaderAdapter, StreamWriterAdapter, WriterAdapter
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from mqtt_broker_auth._amqtt_compat import HookedBroker, take_connection
from mqtt_broker_auth.decision import ENROLLMENT_SERVICE_ROLE, DeviceGate, DeviceIdentity, Refusal
from mqtt_broker_auth.embedded.broker_limits import (
    BrokerLimits,
    BrokerMode,
    Slot,
    ThrottledWarning,
    UnauthenticatedSlots,
)
from mqtt_broker_auth.embedded.listener_tls import ListenerTls
from mqtt_broker_auth.embedded.packet_limit import PacketLimitReader, PacketRefused, PacketTooLarge
from mqtt_broker_auth.embedded.tls_admission import (
    HandshakeCheck,
    TlsRefusal,
    openssl_refusal,
    peer_chain,
)
from trustlists.blocking import run_blocking

__all__ = [
    "IDENTITY",
    "DeviceCertAuthPlugin",
    "DeviceGateBroker",
    "DeviceTopicPlugin",
    "gate_for",
    "identity_of",
    "peer_chain",
    "register_gate",
    "unregister_gate",
]

_log = logging.getLogger(__name__)

IDENTITY = "otpki.identity"  # Session.attributes key: the DeviceIdentity of the current connection
_GATED = "otpki.gated"  # set by DeviceGateBroker for the CONNECT it just authenticated, consumed by the plugin
_AUTHENTICATED = "otpki.authenticated"  # what amqtt's plugin round decided for the current connection
CONNECTED_SINCE = "otpki.connected_since"  # Session.attributes key: when the current connection was admitted

_gates: dict[str, DeviceGate] = {}
_gates_lock = threading.Lock()


def register_gate(gate: DeviceGate, name: str | None = None) -> str:
    """Make `gate` findable by the plugins under `name` (a fresh unique name when None)."""
    name = name or f"gate-{uuid.uuid4().hex}"
    with _gates_lock:
        _gates[name] = gate
    return name


def unregister_gate(name: str) -> None:
    with _gates_lock:
        _gates.pop(name, None)


def gate_for(name: str) -> DeviceGate:
    with _gates_lock:
        gate = _gates.get(name)
    if gate is None:
        raise LookupError(f"no DeviceGate registered as {name!r}; call register_gate() before starting the broker")
    return gate


def identity_of(session: Session | None) -> DeviceIdentity | None:
    if session is None:
        return None
    identity = session.attributes.get(IDENTITY)
    return identity if isinstance(identity, DeviceIdentity) else None


async def authenticate_connection(gate: DeviceGate, ssl_object: ssl.SSLObject | None,
                                  client_id: str | None) -> DeviceIdentity | Refusal:
    chain = peer_chain(ssl_object)
    if not chain:
        return Refusal(reason="no_certificate", detail="the TLS connection carries no client certificate")
    # ~0.2 ms of validation and two indexed SQLite reads: off the loop, so a busy database never stalls it.
    return await run_blocking(gate.authenticate, chain, client_id)


class DeviceCertAuthPlugin(BaseAuthPlugin):
    """Admits exactly the sessions whose current TLS certificate the DeviceGate accepts."""

    @dataclass
    class Config:
        gate: str = "default"

    async def authenticate(self, *, session: Session) -> bool | None:
        gate = gate_for(self.config.gate)
        identity = identity_of(session)
        if session.attributes.pop(_GATED, False) and identity is not None:
            # DeviceGateBroker authenticated this very connection a moment ago (a one-shot mark it sets per
            # CONNECT, so a stored session never carries it into a later connection); only revocation can differ.
            return gate.still_valid(identity)
        if session.parent:
            # A resumed session on a broker that is not DeviceGateBroker: its ssl_object may belong to an
            # earlier connection (amqtt#389), so it proves nothing about this one.
            _log.warning("MQTT connect refused for %r: resumed session without a verified TLS identity "
                         "(run DeviceGateBroker)", session.client_id)
            return False
        outcome = await authenticate_connection(gate, session.ssl_object, session.client_id)
        if isinstance(outcome, Refusal):
            _log.warning("MQTT connect refused for %r: %s (%s)", session.client_id, outcome.reason, outcome.detail)
            return False
        session.attributes[IDENTITY] = outcome
        session.username = outcome.device
        return True


_ACTIONS: dict[Action, Literal["publish", "subscribe", "receive"]] = {
    Action.PUBLISH: "publish", Action.SUBSCRIBE: "subscribe", Action.RECEIVE: "receive"}


class DeviceTopicPlugin(BaseTopicPlugin):
    """Per-identity topic ACL from the group policy; deny by default, and nothing once the identity lapsed."""

    @dataclass
    class Config:
        gate: str = "default"

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool | None:
        identity = identity_of(session)
        name = _ACTIONS.get(action) if action is not None else None
        if identity is None or topic is None or name is None:
            return False
        gate = gate_for(self.config.gate)
        # still_valid is two dict lookups: a revoked device is cut off from every message at once, before the
        # revocation watcher gets round to closing its connection.
        return gate.still_valid(identity) and gate.authorize(identity, topic, name)


@dataclass
class _PreAuth:
    """One connection between TCP accept and the judgement of its CONNECT."""

    slot: Slot
    stream: asyncio.StreamWriter
    peer: str
    deadline: float  # event-loop time by which the CONNECT must have arrived
    client_id: str | None = None  # once the CONNECT was read, for later log lines

    def abort(self) -> None:
        # abort, not close: nothing is owed to a peer that overstayed, and close() could wait on it.
        self.stream.transport.abort()

    def describe(self) -> str:
        return f"{self.peer} (client id {self.client_id!r})" if self.client_id is not None else self.peer


class DeviceGateBroker(HookedBroker):
    """amqtt's Broker with the DeviceGate in front of its session table (see the module docstring).

    `tls` holds the listener's TLS contexts (replace the attribute to apply a new trust-list version);
    None serves plain TCP (tests of the MQTT layer only). The amqtt config's listeners must not set `ssl`:
    this class does the handshakes. `require_certificate` says how `tls` was built (a client without a
    certificate never gets to send CONNECT, or reaches the gate and gets CONNACK 5).
    """

    def __init__(self, config: dict[str, Any], *, gate: DeviceGate | None, tls: ListenerTls | None = None,
                 handshake_check: HandshakeCheck | None = None, limits: BrokerLimits | None = None,
                 mode: BrokerMode = "standard", require_certificate: bool = True,
                 presence_clock: Callable[[], datetime] | None = None, **kwargs: Any) -> None:
        """gate=None keeps amqtt's own connect path (same TLS and limits): the benchmark's admit-everyone baseline.
        `presence_clock` stamps connects and disconnects (the engine's clock, so the console shows its times)."""
        super().__init__(config, **kwargs)
        for name, listener in self.listeners_config.items():
            if listener.get("ssl", False):
                raise ValueError(f"listener {name!r}: DeviceGateBroker does the TLS handshakes itself; pass the TLS "
                                 "contexts as tls= and leave ssl off in the amqtt listener config")
        if mode == "bootstrap" and gate is None:
            raise ValueError("a bootstrap listener needs the DeviceGate to tell identities apart")
        self.gate = gate
        self.tls = tls
        self.handshake_check = handshake_check
        self.limits = limits or BrokerLimits()
        self.mode: BrokerMode = mode
        self.require_certificate = require_certificate
        self.unauthenticated = UnauthenticatedSlots(self.limits.max_unauthenticated)
        self.events = ThrottledWarning(_log)  # limit hits and TLS refusals, counted in .events.counts
        self.refusals: deque[Refusal] = deque(maxlen=256)  # the latest connects the gate refused (tests, bench)
        self.tls_refusals: deque[TlsRefusal] = deque(maxlen=256)  # closed at TLS, no MQTT byte read
        self._pre_auth: dict[WriterAdapter, _PreAuth] = {}
        self.presence_clock: Callable[[], datetime] = presence_clock or (lambda: datetime.now(UTC))
        self.disconnected_at: dict[str, datetime] = {}  # device name -> when its last connection ended
        self.presence_changed = asyncio.Event()  # set at every connect and disconnect (last_seen.LastSeenWriter)

    # -- before any MQTT byte: accept, TLS, the handshake check ------------------------------------------------

    async def on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str) -> None:
        peer = _peer_of(writer)
        slot = self.unauthenticated.take()
        if slot is None:
            self.events.warn("too_many_unauthenticated", "MQTT connection from %s refused: %d connections are "
                             "already waiting to authenticate (max_unauthenticated)", peer, self.unauthenticated.limit)
            writer.transport.abort()
            return
        loop = asyncio.get_running_loop()
        pre_auth = _PreAuth(slot=slot, stream=writer, peer=peer, deadline=loop.time() + self.limits.connect_timeout_s)
        try:
            if not await self._secure(writer, pre_auth):
                return
            adapter = StreamWriterAdapter(writer)
            packets = PacketLimitReader(reader, self.limits.max_packet_size,
                                        on_refused=lambda exc: self._packet_refused(pre_auth, exc))
            self._pre_auth[adapter] = pre_auth
            try:
                await self.serve_connection(listener_name, packets, adapter)
            finally:
                self._pre_auth.pop(adapter, None)
        finally:
            slot.release()

    async def _secure(self, writer: asyncio.StreamWriter, pre_auth: _PreAuth) -> bool:
        """TLS handshake and handshake check, within the connect deadline; False when the connection was closed.

        The first await below is start_tls, which stops reading the socket before the client's first TLS
        bytes can reach the plain stream: nothing may be awaited before it.
        """
        if self.tls is None:
            return True
        context, _crl_checked = self.tls.context()
        try:
            async with asyncio.timeout_at(pre_auth.deadline):
                await writer.start_tls(context, ssl_handshake_timeout=self.limits.connect_timeout_s)
                outcome = None
                if self.handshake_check is not None:
                    outcome = await self.handshake_check(writer.get_extra_info("ssl_object"))
        except TimeoutError:
            self.events.warn("connect_timeout", "MQTT connection from %s closed: TLS handshake not done within "
                             "%.1f s (connect_timeout_s)", pre_auth.peer, self.limits.connect_timeout_s)
            pre_auth.abort()
            return False
        except ssl.SSLError as exc:
            reason, detail = openssl_refusal(exc)
            self._tls_refused(TlsRefusal(layer="openssl", reason=reason, detail=detail, peer=pre_auth.peer))
            pre_auth.abort()
            return False
        except (OSError, ConnectionError, EOFError):  # the peer went away mid-handshake
            pre_auth.abort()
            return False
        if isinstance(outcome, Refusal):
            self._tls_refused(TlsRefusal(layer="handshake_check", reason=outcome.reason, detail=outcome.detail,
                                         peer=pre_auth.peer))
            pre_auth.abort()
            return False
        return True

    def _tls_refused(self, refusal: TlsRefusal) -> None:
        self.tls_refusals.append(refusal)
        self.events.warn(f"tls_{refusal.reason}", "MQTT connection from %s closed at TLS (%s): %s (%s)",
                         refusal.peer, refusal.layer, refusal.reason, refusal.detail)

    def _packet_refused(self, pre_auth: _PreAuth, exc: PacketRefused) -> None:
        self.events.warn("packet_too_large" if isinstance(exc, PacketTooLarge) else "malformed_packet",
                         "MQTT connection from %s closed: %s (max_packet_size)", pre_auth.describe(), exc)
        pre_auth.abort()

    # -- CONNECT ------------------------------------------------------------------------------------------------

    async def on_connect(self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str,
                         remote_port: int) -> tuple[BrokerProtocolHandler, Session]:
        pre_auth = self._pre_auth.get(writer)
        try:
            return await self._connect(reader, writer, f"{remote_address}:{remote_port}", pre_auth)
        finally:
            if pre_auth is not None:
                pre_auth.slot.release()  # authenticated or refused: no longer waiting

    async def _connect(self, reader: ReaderAdapter, writer: WriterAdapter, peer: str,
                       pre_auth: _PreAuth | None) -> tuple[BrokerProtocolHandler, Session]:
        deadline = pre_auth.deadline if pre_auth is not None else \
            asyncio.get_running_loop().time() + self.limits.connect_timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                if self.gate is None:
                    host, _, port = peer.rpartition(":")
                    return await self.amqtt_connect(reader, writer, host, int(port))
                handler, connecting = await BrokerProtocolHandler.init_from_connect(reader, writer,
                                                                                    self.plugins_manager)
        except TimeoutError:
            self.events.warn("connect_timeout", "MQTT connection from %s closed: no CONNECT within %.1f s of "
                             "accepting it (connect_timeout_s)", peer, self.limits.connect_timeout_s)
            await _close(writer, pre_auth)
            raise AMQTTError("no CONNECT in time") from None
        except PacketRefused as exc:  # logged and aborted by the reader already
            raise AMQTTError(str(exc)) from exc
        except (AMQTTError, MQTTError, NoDataError) as exc:
            self.events.warn("invalid_connect", "no valid CONNECT from %s: %s", peer, exc)
            await _close(writer, pre_auth)
            raise AMQTTError(exc) from exc
        if pre_auth is not None:
            pre_auth.client_id = connecting.client_id

        # Authenticate THIS connection before the session table is read or changed.
        identity = await self._gate(connecting, writer)
        if isinstance(identity, Refusal):
            self.refusals.append(identity)
            _log.warning("MQTT connect refused from %s client id %r: %s (%s)", peer, connecting.client_id,
                         identity.reason, identity.detail)
            await self._refuse(handler, connecting, reader, writer)
            # The broker's connection handler drops a connection whose setup raised AMQTTError.
            raise AMQTTError(f"not authorized: {identity.reason}")
        connecting.username = identity.device
        session = await self._attach_session(connecting)
        session.attributes[IDENTITY] = identity
        session.attributes[_GATED] = True
        session.attributes[CONNECTED_SINCE] = self.presence_clock()
        self.presence_changed.set()
        # amqtt's "timeout-disconnect-delay" setting: extra seconds of grace on top of the client's keep-alive.
        grace = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(grace, int):
            session.keep_alive += grace
        return handler, session

    async def _attach_session(self, connecting: Session) -> Session:
        """MQTT 3.1.1 section 3.1.2.4, for a client that has already proved who it is.

        CleanSession=1 discards whatever the client id had stored; CleanSession=0 resumes the stored session
        (session present = 1) with this connection's parameters and TLS object, or starts a new one.
        """
        client_id = connecting.client_id or ""
        stored = self.stored_session(client_id)
        if connecting.clean_session or stored is None:
            if connecting.clean_session and stored is not None:
                await self.discard_session(client_id)
            connecting.parent = 0
            return connecting
        take_connection(stored, connecting)  # the amqtt#389 fix: this connection's TLS object and identity
        stored.parent = 1
        return stored

    async def _gate(self, session: Session, writer: WriterAdapter) -> DeviceIdentity | Refusal:
        assert self.gate is not None
        ssl_object = writer.get_ssl_info()
        session.ssl_object = ssl_object
        identity = await authenticate_connection(self.gate, ssl_object, session.client_id or None)
        if isinstance(identity, Refusal):
            return identity
        if self.mode == "bootstrap" and not _bootstrap_listener_admits(identity):
            return Refusal(reason="not_on_bootstrap_listener",
                           detail=f"{identity.device!r} presents an operational certificate; the bootstrap "
                                  "listener admits bootstrap identities and the enrollment service only")
        if not session.client_id:
            # An empty client id would get a random one, and the identity rule could not hold.
            return Refusal(reason="client_id_mismatch", detail="an empty client id cannot match the identity")
        existing = self.stored_session(session.client_id)
        if existing is not None:
            owner = identity_of(existing)
            if owner is not None and owner.owner_id != identity.owner_id:
                # Only matters when client ids need not match identities: never hand one device another's session.
                return Refusal(reason="client_id_mismatch",
                               detail=f"client id {session.client_id!r} is the session of {owner.device!r}")
        if session.will_flag and not self.gate.authorize(identity, session.will_topic or "", "publish"):
            return Refusal(reason="will_topic_denied",
                           detail=f"will topic {session.will_topic!r} is not a topic {identity.device!r} may publish")
        return identity

    async def _refuse(self, handler: BrokerProtocolHandler, session: Session, reader: ReaderAdapter,
                      writer: WriterAdapter) -> None:
        session.parent = 0  # [MQTT-3.2.2-4]: session present is 0 with a non-zero return code
        handler.attach(session, reader, writer)
        try:
            await handler.mqtt_connack_authorize(False)
        except (OSError, ConnectionError, MQTTError, AMQTTError):
            pass
        finally:
            with contextlib.suppress(OSError, ConnectionError, asyncio.CancelledError):
                await writer.close()

    def on_authenticated(self, session: Session, authenticated: bool) -> None:
        session.attributes[_AUTHENTICATED] = authenticated

    async def on_connection_end(self, session: Session) -> None:
        self._note_disconnect(session)
        # (c): a session the plugins refused (revoked between gate and plugin) must not stay in the table.
        client_id = session.client_id or ""
        if session.attributes.get(_AUTHENTICATED) is False and self.stored_session(client_id) is session:
            await self.end_session(client_id)

    async def kick(self, client_id: str, reason: str) -> bool:
        """Close a client's connection and drop its session (amqtt has no public API for it)."""
        session = self.stored_session(client_id)
        if session is None:
            return False
        session.will_flag = False  # a revoked device does not get its last will published
        self._note_disconnect(session)
        session.attributes.pop(IDENTITY, None)
        _log.warning("MQTT session of %r closed: %s", client_id, reason)
        await self.end_session(client_id)  # closes the socket, drops subscriptions and queued messages
        return True


    # -- presence: who is on the broker now, and when each device was last seen ----------------------------------

    def online_devices(self) -> dict[str, datetime]:
        """Device name -> when its current connection was admitted, for every connected, authenticated session."""
        online: dict[str, datetime] = {}
        for session, _handler in list(self.sessions.values()):
            identity = identity_of(session)
            since = session.attributes.get(CONNECTED_SINCE)
            if identity is None or not isinstance(since, datetime) or session.transitions.state != "connected":
                continue
            if session.attributes.get(_AUTHENTICATED) is False:
                continue  # refused by the plugins: on its way out
            if identity.kind == "operational" and identity.role == ENROLLMENT_SERVICE_ROLE:
                continue  # otpki's own enrollment service, not a device
            online[identity.device] = max(since, online.get(identity.device, since))
        return online

    def _note_disconnect(self, session: Session) -> None:
        identity = identity_of(session)
        if identity is not None and session.attributes.pop(CONNECTED_SINCE, None) is not None:
            self.disconnected_at[identity.device] = self.presence_clock()
            self.presence_changed.set()


def _bootstrap_listener_admits(identity: DeviceIdentity) -> bool:
    return identity.kind == "bootstrap" or (identity.kind == "operational"
                                            and identity.role == ENROLLMENT_SERVICE_ROLE)


def _peer_of(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


async def _close(writer: WriterAdapter, pre_auth: _PreAuth | None) -> None:
    if pre_auth is not None:
        pre_auth.abort()
        return
    with contextlib.suppress(OSError, ConnectionError, asyncio.CancelledError):
        await writer.close()
