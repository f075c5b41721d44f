"""Every asyncua internal otpki relies on, in one place, checked when this module is imported.

asyncua has no public API for what the GDS and the push target need: who is calling a method (session user,
SecureChannel security mode and client certificate), when a session ends, swapping a running server's
certificate, the list of open SecureChannels, and delivering an event to chosen subscriptions only; nor for what
the push client needs: the status a server refuses its SecureChannel with. otpki reaches into asyncua's internals
for these, and only here. At import, `_check()` verifies that every class, method, parameter list and instance
attribute used below still exists in the installed asyncua and raises `AsyncuaIncompatible` naming the version
this module was written for otherwise; pyproject.toml pins asyncua to that version.
tests/opcua_gds/test_asyncua_compat.py holds one contract test per item below, run against the real library: a
release that keeps a name but changes what it does fails there.

Nothing here degrades quietly: a missing attribute raises instead of being read as "no channels", "no
certificate" or "no session", because each of those would keep old trust alive or let a caller through.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import copy
import dataclasses
import functools
import inspect
import logging
import textwrap
import threading
import weakref
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, cast

from asyncua import Client, Server, ua
from asyncua.client.ua_client import UaClient, UASocketProtocol
from asyncua.common.connection import SecureConnection
from asyncua.common.utils import Buffer
from asyncua.crypto.security_policies import SecurityPolicy, SecurityPolicyFactory, SecurityPolicyNone
from asyncua.server.address_space import AddressSpace, AttributeValue, NodeData, NodeManagementService
from asyncua.server.binary_server_asyncio import BinaryServer, OPCUAProtocol
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession, SessionState
from asyncua.server.internal_subscription import InternalSubscription
from asyncua.server.standard_address_space import standard_address_space
from asyncua.server.subscription_service import SubscriptionService
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua.ua_binary import nodeid_from_binary, struct_from_binary
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from opcua_gds.certificate_chain import split_chain
from opcua_gds.nodeids import ns0_node_id, ua_status

WRITTEN_FOR = "2.1.0"
log = logging.getLogger(__name__)
_MARK = "_otpki_asyncua_compat"  # set on the functions this module patched in, so patching stays idempotent


class AsyncuaIncompatible(ImportError):
    """The installed asyncua lacks something otpki's asyncua gate relies on."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"otpki's asyncua gate (opcua_gds/_asyncua_compat.py) was written for asyncua {WRITTEN_FOR}; "
                         f"asyncua {version('asyncua')} {problem}")


# -- 1. Who is calling: the CallRequest hook ------------------------------------------------------------------------
# asyncua hands a method callback only (parent, *args). `UaProcessor._process_message(typeid, requesthdr, seqhdr,
# body)` serves one request of one connection and awaits coroutine method callbacks inside its own task, so a
# ContextVar set around it is what the callback sees. The channel's SecurityPolicy (`UaProcessor._connection.
# security_policy`) carries the mode, the policy URI and the client's certificate; `UaProcessor.session` the
# session (None before CreateSession).

_CALL_REQUEST = ns0_node_id(ua.ObjectIds.CallRequest_Encoding_DefaultBinary)


@dataclass(frozen=True)
class Caller:
    """The session and SecureChannel a CallRequest arrived on."""

    user: Any  # the User the session was activated with (None without a session)
    security_mode: ua.MessageSecurityMode
    security_policy_uri: str
    client_certificate: bytes | None  # DER of the channel's client application certificate; b"" or None: none
    session_id: ua.NodeId | None


CallScope = Callable[[Caller], AbstractContextManager[object]]
_call_scope: list[CallScope] = []  # at most one: the scope every CallRequest runs in


def _caller_of(processor: UaProcessor) -> Caller:
    policy = processor._connection.security_policy
    session = processor.session
    return Caller(user=session.user if session is not None else None, security_mode=policy.Mode,
                  security_policy_uri=policy.URI, client_certificate=policy.peer_certificate,
                  session_id=session.session_id if session is not None else None)


def run_call_requests_in(scope: CallScope) -> None:
    """Serve every CallRequest of every server in this process inside `scope(caller)`; idempotent."""
    _call_scope[:] = [scope]
    _install_request_hook()


def _install_request_hook() -> None:
    """One wrapper for the per-request scopes: CallRequests (above) and CreateSessionRequests (section 13)."""
    original = UaProcessor._process_message
    if getattr(original, _MARK, False):
        return

    async def process_message(self: UaProcessor, typeid: ua.NodeId, requesthdr: Any, seqhdr: Any, body: Any) -> Any:
        if typeid == _CALL_REQUEST and _call_scope:
            with _call_scope[0](_caller_of(self)):
                return await original(self, typeid, requesthdr, seqhdr, body)
        if typeid == _CREATE_SESSION and _session_scope:
            with _session_scope[0](peer_chain_of(self._connection)):
                return await original(self, typeid, requesthdr, seqhdr, body)
        return await original(self, typeid, requesthdr, seqhdr, body)

    setattr(process_message, _MARK, True)
    # asyncua offers no hook here: replacing its method is this gate's job (checked by _check at import).
    UaProcessor._process_message = process_message  # type: ignore[method-assign]


# -- 2. Which identity token is being activated ---------------------------------------------------------------------
# `InternalSession.activate_session(params, peer_certificate)` calls the user manager's get_user synchronously and
# passes it the channel's client certificate for every token type, anonymous included, so the user manager cannot
# tell an X.509 user token from an anonymous one on a secure channel. The hook tells it the token's type.

ActivationScope = Callable[[type], AbstractContextManager[object]]
_activation_scope: list[ActivationScope] = []


def token_type(token: Any) -> type:
    """The identity token type ActivateSession carries; a null or missing token is anonymous (OPC 10000-4 5.6.3)."""
    if token is None or (isinstance(token, ua.ExtensionObject) and token.TypeId == ns0_node_id(ua.ObjectIds.Null)):
        return ua.AnonymousIdentityToken
    return type(token)


def run_activations_in(scope: ActivationScope) -> None:
    """Run every ActivateSession (and so the user manager's get_user) inside `scope(token_type)`; idempotent."""
    _activation_scope[:] = [scope]
    original = InternalSession.activate_session
    if getattr(original, _MARK, False):
        return

    def activate_session(self: InternalSession, params: ua.ActivateSessionParameters,
                         peer_certificate: bytes | None) -> Any:
        if not _activation_scope:
            return original(self, params, peer_certificate)
        with _activation_scope[0](token_type(params.UserIdentityToken)):
            return original(self, params, peer_certificate)

    setattr(activate_session, _MARK, True)
    # asyncua offers no hook here: replacing its method is this gate's job (checked by _check at import).
    InternalSession.activate_session = activate_session  # type: ignore[method-assign]


# -- 3. When a session ends -------------------------------------------------------------------------------------------
# `InternalSession.close_session(delete_subs)` runs on CloseSession, on the session timeout and when the
# connection of a session without subscriptions drops, possibly more than once for one session (CloseSession,
# then the connection's end); `InternalSession.state` says whether it is closed already and
# `InternalSession.iserver` whose session it is.

# Per server (by its InternalServer, weakly: a stopped server must not be kept alive by its listener).
_close_listeners: weakref.WeakKeyDictionary[InternalServer, Callable[[ua.NodeId], None]] = \
    weakref.WeakKeyDictionary()


def on_session_closed(server: Server, listener: Callable[[ua.NodeId], None]) -> None:
    """Call `listener(session_id)` once when a session of `server` closes; replaces an earlier listener."""
    _install_close_hook()
    _close_listeners[server.iserver] = listener


def _install_close_hook() -> None:
    original = InternalSession.close_session
    if getattr(original, _MARK, False):
        return

    async def close_session(self: InternalSession, delete_subs: bool = True) -> None:
        already_closed = self.state == SessionState.Closed
        try:
            await original(self, delete_subs)
        finally:
            listener = None if already_closed else _close_listeners.get(self.iserver)
            if listener is not None:
                try:
                    listener(self.session_id)
                except Exception:  # a listener's bug must not keep asyncua from closing the session
                    log.exception("session-close listener failed")

    setattr(close_session, _MARK, True)
    # asyncua offers no hook here: replacing its method is this gate's job (checked by _check at import).
    InternalSession.close_session = close_session  # type: ignore[method-assign]


# -- 4. The server's own certificate, swapped while it runs -----------------------------------------------------------
# `Server.start()` bakes `InternalServer.certificate`/`private_key` into `InternalServer.endpoints` (the
# EndpointDescriptions GetEndpoints and CreateSession return) and into the SecurityPolicyFactory objects of
# `Server._policies`, through `Server._setup_server_nodes()`. The BinaryServer keeps a reference to that very list
# and every new connection selects its policy from it, so clearing both lists in place and running
# `_setup_server_nodes()` again makes every NEW SecureChannel use the new certificate. Channels already open keep
# the policy object they were created with (renewals do not select again): see live_channels.

def server_identity(server: Server) -> tuple[Any, Any]:
    """The certificate (cryptography x509) and private key the server presents (None, None before loading)."""
    return server.iserver.certificate, server.iserver.private_key


async def replace_server_identity(server: Server, certificate: Any, private_key: Any,
                                  issuers: Sequence[bytes] = ()) -> None:
    """Make (certificate, private_key) the server's identity for new SecureChannels and CreateSession signatures.

    `issuers`: the CAs presented after the certificate (section 12); the chain of the old certificate is dropped.
    """
    server.iserver.certificate = certificate
    server.iserver.private_key = private_key
    _register_chain(server, issuers)
    await _rebuild_endpoints(server)


async def _rebuild_endpoints(server: Server) -> None:
    if server.bserver is None:  # not started: start() builds endpoints and policies from the identity above
        return
    server.iserver.endpoints.clear()
    server._policies.clear()
    await server._setup_server_nodes()


def set_user_manager(server: Server, user_manager: Any) -> None:
    """Replace the user manager of an already constructed server (asyncua asks it at every ActivateSession)."""
    server.iserver.set_user_manager(user_manager)


# -- 5. The open SecureChannels -----------------------------------------------------------------------------------
# `BinaryServer.clients` lists the live OPCUAProtocol of every accepted connection; each has its asyncio
# `transport` and its `processor` (UaProcessor), whose `_connection.security_policy` holds the certificates the
# channel was opened with. Closing the transport ends the channel and (without subscriptions) its session.

@dataclass(frozen=True)
class LiveChannel:
    host_certificate: bytes | None  # DER the server presented on this channel
    peer_certificate: bytes | None  # DER of the client application certificate; b"" or None: none
    _protocol: OPCUAProtocol = field(repr=False)
    # The chain the client sent in its OpenSecureChannel (leaf first; section 13); () without one.
    peer_chain: tuple[bytes, ...] = ()

    def close(self) -> None:
        """Close after writing what is buffered (a response already sent still reaches the client)."""
        transport = self._protocol.transport
        if transport is not None:
            transport.close()

    def abort(self) -> None:
        """Drop the connection at once, buffered responses included."""
        transport = self._protocol.transport
        if transport is not None:
            transport.abort()

    def has_unsent_events(self) -> bool:
        """Whether a subscription of this channel's session holds events not yet published (see section 10)."""
        session = self._protocol.processor.session if self._protocol.processor is not None else None
        if session is None:
            return False
        return any(subscription._publishing_enabled and bool(subscription._triggered_events)
                   for subscription in list(session.subscription_service.subscriptions.values())
                   if subscription.session_id == session.session_id)


def live_channels(server: Server) -> list[LiveChannel]:
    """The server's open connections and the certificates of their SecureChannels ([] before start)."""
    if server.bserver is None:
        return []
    channels = []
    for protocol in list(server.bserver.clients):
        if protocol.processor is None:
            # asyncua appends a protocol to `clients` only once it has its processor; anything else is a change.
            raise AsyncuaIncompatible("lists a connection without a UaProcessor in BinaryServer.clients")
        connection = protocol.processor._connection
        policy = connection.security_policy
        channels.append(LiveChannel(policy.host_certificate, policy.peer_certificate, protocol,
                                    peer_chain_of(connection)))
    return channels


# -- 6. A client's SecureChannel policy, set from already parsed objects -------------------------------------------
# `Client.set_security` loads certificate and key from files for every session; what it does after loading is
# to set `Client.security_policy` and hand the same object to `UaClient.set_security`, which the next connect()
# uses for the SecureChannel. otpki parses its identity once and does that last step itself.

def use_security_policy(client: Client, policy: SecurityPolicy) -> None:
    """The SecurityPolicy the client's next connect() opens its SecureChannel with."""
    # asyncua's Client declares the attribute by its default (SecurityPolicyNone); its own set_security stores any
    # SecurityPolicy there, as done here.
    client.security_policy = policy  # type: ignore[assignment]
    client.uaclient.set_security(policy)


# -- 7. A method node's callback -------------------------------------------------------------------------------------
# `Server.link_method` stores the callback on the method's NodeData in the address space (`InternalServer.aspace`);
# reading it back lets a wrapper (the PLC fault injection) call the callback it replaces.

def method_callback(server: Server, method_id: ua.NodeId) -> Callable[..., Any] | None:
    """The callback `link_method` bound to the method node (None when unbound)."""
    return server.iserver.aspace[method_id].call


# -- 8. A structure class under its browse name in `asyncua.ua` ------------------------------------------------------
# asyncua's codec is keyed by NodeId, but `load_data_type_definitions()` skips generating a class for a server's
# DataType when `ua.<name>` already exists with that DataType NodeId as its `data_type`, and
# `register_extension_object` binds `ua.<name>` only when the name is still free. Binding the name ourselves (last
# registration wins) keeps a session decoding into our class.

def register_structure(name: str, cls: type, encoding_id: ua.NodeId, data_type_id: ua.NodeId) -> None:
    """Encode/decode `cls` as the ExtensionObject `encoding_id` of DataType `data_type_id`, and bind `ua.<name>`."""
    setattr(ua, name, cls)
    ua.register_extension_object(name, encoding_id, cls, data_type_id)


# -- 9. Why a server refused the SecureChannel -------------------------------------------------------------------
# A server that refuses a client (its certificate, its chain, its CRLs) says why in a StatusCode; asyncua's client
# keeps it only for the plain ERR message, and drops the server's Reason even then. Two refusals lose the status:
# - node-opcua (2.157) refuses OpenSecureChannel with a message of type ERR laid out as an OPN chunk (SecureChannelId,
#   asymmetric security header, sequence header, a ServiceFault in clear). `SecureConnection.
#   receive_from_header_and_body` reads it as ErrorMessage(Error=<the channel id>, Reason=<the policy URI>): Error 2
#   is Good, nothing is raised, and the caller only sees the socket close ("connection lost").
# - A ServiceFault in place of the OpenSecureChannelResponse (OPC 10000-6 6.7.4: after the server verified the
#   message security) resolves the pending OpenSecureChannel with a body asyncua cannot parse as a response.
# `UASocketProtocol._process_received_data` hands each decoded message to `_process_received_message` inside a
# `try` that fails every pending request with a UaStatusCodeError raised there, and closes the socket. So the ERR body
# is decoded whole here (both layouts), and an ERR or an OPN ServiceFault raises the server's status there, with the
# server's reason as an exception note. Patched for every asyncua client in the process: it changes only how a
# refusal is reported (asyncua's server reads a client's ERR with the same decoder, and only logs it).

_SERVICE_FAULT = ns0_node_id(ua.ObjectIds.ServiceFault_Encoding_DefaultBinary)
REFUSAL_NOTE = "The server's reason: "


def decode_error_message(body: Buffer) -> ua.ErrorMessage:
    """An ERR message body, in the Part 6 layout (Error, Reason) or node-opcua's (an OPN chunk holding a ServiceFault).

    An ERR always reports a failure: one whose status cannot be read is BadUnknownResponse, never Good.
    """
    # A body that is not in a layout raises anywhere in its decoding: then it is tried in the next.
    with contextlib.suppress(Exception):
        message = struct_from_binary(ua.ErrorMessage, body.copy())
        if message.Error.is_bad():
            return message
    with contextlib.suppress(Exception):
        chunk = body.copy()
        chunk.skip(4)  # SecureChannelId
        struct_from_binary(ua.AsymmetricAlgorithmHeader, chunk)
        struct_from_binary(ua.SequenceHeader, chunk)
        fault = _service_fault(chunk)
        if fault is not None and fault.ServiceResult.is_bad():
            return ua.ErrorMessage(fault.ServiceResult, ua.String("; ".join(s for s in fault.StringTable or [] if s)))
    return ua.ErrorMessage(ua_status(ua.StatusCodes.BadUnknownResponse),
                           ua.String("the server sent an ERR message otpki cannot decode"))


def _service_fault(body: Buffer) -> ua.ResponseHeader | None:
    """The ResponseHeader of a ServiceFault body (None for any other body); `body` is not consumed."""
    data = body.copy()
    if nodeid_from_binary(data) != _SERVICE_FAULT:
        return None
    header: ua.ResponseHeader = struct_from_binary(ua.ResponseHeader, data)
    return header


def refusal(status: ua.StatusCode, reason: str | None) -> ua.UaStatusCodeError:
    """The error a refused request fails with: the server's status (asyncua's class for it) and its reason."""
    error = ua.UaStatusCodeError(status.value)
    if reason:
        error.add_note(REFUSAL_NOTE + reason)
    return error


def read_channel_refusals() -> None:
    """Make every asyncua client in this process fail with the status and reason a server refuses it with."""
    _install_error_decoder()
    original = UASocketProtocol._process_received_message
    if getattr(original, _MARK, False):
        return

    def process_received_message(self: UASocketProtocol, msg: Any) -> None:
        # Raised here, the refusal fails every pending request and closes the socket (_process_received_data).
        if isinstance(msg, ua.ErrorMessage):
            raise refusal(msg.Error, msg.Reason)
        if isinstance(msg, ua.Message) and isinstance(msg.SecurityHeader(), ua.AsymmetricAlgorithmHeader):
            fault = _service_fault(msg.body())
            if fault is not None:
                raise refusal(fault.ServiceResult, "; ".join(s for s in fault.StringTable or [] if s))
        original(self, msg)

    setattr(process_received_message, _MARK, True)
    UASocketProtocol._process_received_message = process_received_message  # type: ignore[method-assign]


def _install_error_decoder() -> None:
    original = SecureConnection.receive_from_header_and_body
    if getattr(original, _MARK, False):
        return

    def receive_from_header_and_body(self: SecureConnection, header: ua.Header, body: Buffer) -> Any:
        # asyncua annotates MessageType with the class whose attributes are the bytes it holds
        if cast(bytes, header.MessageType) != ua.MessageType.Error:
            return original(self, header, body)
        message = decode_error_message(body.copy(header.body_size))
        body.skip(min(header.body_size, len(body)))  # all of it: the rest is no next message
        return message

    setattr(receive_from_header_and_body, _MARK, True)
    SecureConnection.receive_from_header_and_body = receive_from_header_and_body  # type: ignore[method-assign]


# -- 10. Events for chosen subscriptions only ------------------------------------------------------------------------
# asyncua hands an event to every subscription monitoring its emitting node, whoever owns it. Audit events name users
# and what they did, so otpki delivers them per subscription: `InternalServer.subscription_service` keeps the
# subscriptions (`subscriptions`: id -> InternalSubscription, each with the `session_id` of the session that created
# it) and delivers to one with `trigger_event(event, subscription_id)`; `InternalServer._external_sessions`
# (authentication token -> InternalSession) holds the client sessions with their `user`. An InternalSubscription
# keeps events until its next publish in `_triggered_events` (sent only while `_publishing_enabled`); each
# InternalSession reaches the same service as `subscription_service` (LiveChannel.has_unsent_events).

def subscribers(server: Server) -> list[tuple[int, Any]]:
    """(subscription id, user of the session that owns it) for every client subscription; None: no live session."""
    iserver = server.iserver
    users = {session.session_id: session.user for session in list(iserver._external_sessions.values())}
    return [(subscription_id, users.get(subscription.session_id))
            for subscription_id, subscription in list(iserver.subscription_service.subscriptions.items())]


async def deliver_event(server: Server, event: Any, subscription_id: int) -> None:
    """Hand `event` (an asyncua Event with its fields and `emitting_node` set) to one subscription only."""
    await server.iserver.subscription_service.trigger_event(event, subscription_id=subscription_id)


# -- 11. Stopping a server without waiting out its clock -------------------------------------------------------------
# `InternalServer.stop()` raises `_time_task_stop` and awaits `time_task`, the loop that writes ServerStatus.
# CurrentTime and then sleeps a second: every stop waited up to a second for that sleep (nine PLC simulators of a
# fleet stopped one after another: nine seconds). The task only writes the clock; cancelled and awaited before the
# stop, nothing is lost, and asyncua's stop then skips it (`time_task` is None).

async def stop_server(server: Server) -> None:
    """`server.stop()`, with asyncua's once-a-second clock task cancelled first instead of waited for."""
    iserver = server.iserver
    clock = iserver.time_task
    if clock is not None:
        iserver._time_task_stop = True
        clock.cancel()
        await asyncio.wait({clock})
        iserver.time_task = None
    await server.stop()


# -- 12. The certificate chain a server presents --------------------------------------------------------------
# `Server._setup_server_nodes()` gives every EndpointDescription `ServerCertificate = der(InternalServer.
# certificate)`, the leaf alone, and creates each `SecurityPolicyFactory` without its `certificate_chain`, so the
# SenderCertificate of the server's OpenSecureChannel responses is the leaf alone too. Both can carry a chain:
# a factory's `certificate_chain` (cryptography certificates) is handed to every SecurityPolicy it creates
# (`host_certificate_chain`), whose DER `SecureConnection.message_to_binary` appends after the leaf in the
# asymmetric security header; the endpoints are plain structures. The wrapper of `_setup_server_nodes` appends
# the chain registered for the server's current certificate to both, after every build (start, identity swap).
# CreateSessionResponse.ServerCertificate (`UaProcessor._process_message`) stays the leaf: asyncua checks the
# client's ActivateSession signature over `SecurityPolicy.host_certificate` (the leaf, which OPC 10000-4 5.6.3
# has signed when a chain is sent), and a client finds its SecureChannel's certificate in it either way.

# Per server: (the certificate DER the chain belongs to, the CAs after it). A chain is never presented with
# another certificate than the one it was registered for.
_server_chains: weakref.WeakKeyDictionary[InternalServer, tuple[bytes, tuple[x509.Certificate, ...]]] = \
    weakref.WeakKeyDictionary()


async def present_certificate_chain(server: Server, issuers: Sequence[bytes]) -> None:
    """Present `issuers` (DER, from the certificate's issuer towards the root) after the server's certificate in
    its EndpointDescriptions and OpenSecureChannel responses; () presents the certificate alone.

    Call it after the certificate is loaded; a started server rebuilds its endpoints, so every new
    SecureChannel gets the chain (open ones keep what they were opened with).
    """
    _register_chain(server, issuers)
    await _rebuild_endpoints(server)


def _register_chain(server: Server, issuers: Sequence[bytes]) -> None:
    _install_chain_hook()
    certificate = server.iserver.certificate
    if certificate is None:
        raise ValueError("load the server certificate before presenting its chain")
    _server_chains[server.iserver] = (certificate.public_bytes(Encoding.DER),
                                      tuple(x509.load_der_x509_certificate(der) for der in issuers))


def presented_chain(server: Server) -> list[bytes]:
    """The chain the server's endpoints present now (leaf first; [] before start or without a certificate)."""
    ders = {bytes(e.ServerCertificate) for e in server.iserver.endpoints if e.ServerCertificate}
    if len(ders) > 1:
        raise AsyncuaIncompatible("built endpoints that present different certificates")
    return split_chain(next(iter(ders))) if ders else []


def _install_chain_hook() -> None:
    original = Server._setup_server_nodes
    if getattr(original, _MARK, False):
        return

    async def setup_server_nodes(self: Server) -> None:
        await original(self)
        registered = _server_chains.get(self.iserver)
        certificate = self.iserver.certificate
        if registered is None or certificate is None or not registered[1]:
            return
        leaf = certificate.public_bytes(Encoding.DER)
        if registered[0] != leaf:
            log.warning("the registered certificate chain belongs to another certificate: presenting the leaf alone")
            return
        chain = leaf + b"".join(c.public_bytes(Encoding.DER) for c in registered[1])
        for endpoint in self.iserver.endpoints:
            if endpoint.ServerCertificate == leaf:
                endpoint.ServerCertificate = chain
        for factory in self._policies:
            factory.certificate_chain = list(registered[1])

    setattr(setup_server_nodes, _MARK, True)
    # asyncua builds endpoints and policy factories in one private step: wrapping it is this gate's job.
    Server._setup_server_nodes = setup_server_nodes  # type: ignore[method-assign]


# -- 13. The certificate chain a peer sent ----------------------------------------------------------------------
# `SecureConnection.select_policy(uri, peer_certificate, mode)` receives the SenderCertificate of the peer's
# OpenSecureChannel message (a chain, when the peer sends one) and keeps only its leaf in the SecurityPolicy it
# creates (`peer_certificate`); a client's connection passes the server's OpenSecureChannel response through it
# too (keeping its own policy). The wrapper keeps the whole chain on the connection. asyncua's certificate
# validator hook (`Server.set_certificate_validator`) is called inside `InternalSession.create_session` with the
# certificate of CreateSession's ClientCertificate alone; `run_session_creations_in` serves each
# CreateSessionRequest inside a scope given the channel's chain, the way CallRequests get their caller.

_CREATE_SESSION = ns0_node_id(ua.ObjectIds.CreateSessionRequest_Encoding_DefaultBinary)
_PEER_CHAIN = "_otpki_peer_chain"
SessionScope = Callable[[tuple[bytes, ...]], AbstractContextManager[object]]
_session_scope: list[SessionScope] = []


def keep_peer_chains() -> None:
    """Keep the SenderCertificate chain of every SecureChannel opened from now on, in this process; idempotent."""
    original = SecureConnection.select_policy
    if getattr(original, _MARK, False):
        return

    def select_policy(self: SecureConnection, uri: str, peer_certificate: bytes | None,
                      mode: ua.MessageSecurityMode | None = None) -> None:
        original(self, uri, peer_certificate, mode)
        setattr(self, _PEER_CHAIN, tuple(split_chain(bytes(peer_certificate))) if peer_certificate else ())

    setattr(select_policy, _MARK, True)
    # asyncua drops the chain's CAs here and offers no hook: wrapping it is this gate's job.
    SecureConnection.select_policy = select_policy  # type: ignore[method-assign]


def peer_chain_of(connection: SecureConnection) -> tuple[bytes, ...]:
    """The chain the peer sent when the channel opened (leaf first); () when none was sent or kept."""
    chain: tuple[bytes, ...] = getattr(connection, _PEER_CHAIN, ())
    return chain


def server_chain_seen_by(client: Client) -> list[bytes]:
    """The chain the server sent in the OpenSecureChannel response of the client's open channel ([] if none)."""
    protocol = client.uaclient.protocol
    return list(peer_chain_of(protocol._connection)) if protocol is not None else []


def run_session_creations_in(scope: SessionScope) -> None:
    """Serve every CreateSessionRequest of every server in this process inside `scope(peer_chain)`; idempotent.

    asyncua's certificate validator runs inside it; the chain is the one the client sent when it opened the
    SecureChannel (kept by `keep_peer_chains`, which this installs).
    """
    keep_peer_chains()
    _session_scope[:] = [scope]
    _install_request_hook()


# -- the import-time check ------------------------------------------------------------------------------------------

# -- 14. Whether a started server still listens ------------------------------------------------------------------
# asyncua's BinaryServer keeps its asyncio server in `_server` (None before start) and offers no public way to ask
# whether it still accepts connections; `otpki serve` asks, so a GDS whose listener went away is restarted.

def is_listening(server: Server) -> bool:
    """Whether the started `server` still accepts connections (False before start and after stop)."""
    binary = server.bserver
    listener = binary._server if binary is not None else None
    return listener is not None and listener.is_serving()


# -- 15. The standard address space, built once per process ----------------------------------------------------------
# `InternalServer.load_standard_address_space(shelf_file)` builds namespace 0 (~6,000 nodes) through the
# NodeManagementService for every new server: ~1.1 s of CPU, most of what starting a server costs. asyncua's own
# shortcut (a shelf file) is slower here, and so is unpickling the nodes. The result is the same every time, so
# `reuse_standard_address_space` builds it once per process (`fill_address_space` into an address space no server
# uses: a pristine template, `AddressSpace._nodes`) and hands every server a copy of its own (~0.4 s): new NodeData,
# AttributeValue, DataValue and Variant objects and reference lists, the lists inside values copied deeply; the
# values asyncua only ever replaces (NodeId, QualifiedName, LocalizedText, numbers, strings) shared. The copies are
# needed: asyncua hands a stored DataValue out by reference and its callers change lists in place
# (`register_namespace` appends to the NamespaceArray it read). Used by the test suite, which starts hundreds of
# servers in its worker processes, the plant simulator and the demo.

_standard_nodes: list[dict[ua.NodeId, NodeData]] = []  # the pristine template, once built
_template_lock = threading.Lock()  # servers of several threads and event loops may start at once
_DATA_VALUE_FIELDS = tuple(f.name for f in dataclasses.fields(ua.DataValue))
_VARIANT_FIELDS = tuple(f.name for f in dataclasses.fields(ua.Variant))


def _copy_nodes(nodes: dict[ua.NodeId, NodeData]) -> dict[ua.NodeId, NodeData]:
    new = object.__new__
    put = object.__setattr__  # DataValue and Variant have __slots__ (and no cheaper copy)
    copied: dict[ua.NodeId, NodeData] = {}
    for node_id, node in nodes.items():
        twin = new(NodeData)
        twin.nodeid, twin.call, twin.references = node_id, node.call, list(node.references)
        attributes = {}
        for attribute, held in node.attributes.items():
            value = held.value
            if value is not None:
                value_copy = new(ua.DataValue)
                for name in _DATA_VALUE_FIELDS:
                    put(value_copy, name, getattr(value, name))
                variant = value.Value
                if variant is not None:
                    variant_copy = new(ua.Variant)
                    for name in _VARIANT_FIELDS:
                        put(variant_copy, name, getattr(variant, name))
                    if isinstance(variant.Value, list):
                        put(variant_copy, "Value", copy.deepcopy(variant.Value))
                    put(value_copy, "Value", variant_copy)
                value = value_copy
            held_copy = new(AttributeValue)
            held_copy.value, held_copy.value_callback, held_copy.value_setter = value, None, None
            held_copy.datachange_callbacks = {}
            attributes[attribute] = held_copy
        twin.attributes = attributes
        copied[node_id] = twin
    return copied


def _standard_nodes_copy() -> dict[ua.NodeId, NodeData]:
    """A copy of the template; the first call builds the template (as asyncua does, into an address space of its
    own that no server uses) while any other caller waits for it, so servers started at once build it only once."""
    with _template_lock:
        if not _standard_nodes:
            template = AddressSpace()
            standard_address_space.fill_address_space(NodeManagementService(template))
            _standard_nodes.append(template._nodes)
    return _copy_nodes(_standard_nodes[0])


def reuse_standard_address_space() -> None:
    """From now on, in this process, servers take a copy of one standard address space built once instead of each
    building it (a server given a shelf file still uses it); idempotent. The first server pays the build and a copy
    (~1.5 s), every later one a copy (~0.4 s): for processes that start more than one server."""
    original = InternalServer.load_standard_address_space
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    async def load_standard_address_space(self: InternalServer, shelf_file: Any = None) -> None:
        if shelf_file is not None:
            await original(self, shelf_file)
        else:
            self.aspace._nodes = await asyncio.to_thread(_standard_nodes_copy)

    setattr(load_standard_address_space, _MARK, True)
    # asyncua offers no way to share namespace 0 between servers: replacing its loader is this gate's job.
    InternalServer.load_standard_address_space = load_standard_address_space  # type: ignore[method-assign]


def _parameters(func: Any) -> list[str]:
    return list(inspect.signature(func).parameters)


def _require_method(owner: type, name: str, params: list[str], *, coroutine: bool) -> None:
    func = inspect.getattr_static(owner, name, None)
    if func is None:
        raise AsyncuaIncompatible(f"has no {owner.__name__}.{name}")
    func = getattr(owner, name)
    if getattr(func, _MARK, False):  # already patched by this module: the original was checked at first import
        return
    if _parameters(func) != params:
        raise AsyncuaIncompatible(f"changed {owner.__name__}.{name}{inspect.signature(func)}; expected "
                                  f"({', '.join(params)})")
    if inspect.iscoroutinefunction(func) != coroutine:
        raise AsyncuaIncompatible(f"made {owner.__name__}.{name} {'a coroutine' if not coroutine else 'synchronous'}")


def _assigned_in_init(owner: type[object]) -> set[str]:
    """The `self.<name>` attributes `owner.__init__` assigns (instance state cannot be seen on the class)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(owner.__init__)))
    except (OSError, TypeError) as exc:
        raise AsyncuaIncompatible(f"has no readable source for {owner.__name__}.__init__ ({exc})") from exc
    names = set()
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                names.add(target.attr)
    return names


def _require_state(owner: type[object], *attributes: str) -> None:
    missing = sorted(set(attributes) - _assigned_in_init(owner))
    if missing:
        raise AsyncuaIncompatible(f"no longer sets {', '.join(f'{owner.__name__}.{a}' for a in missing)}")


def _check() -> None:
    # 1. the CallRequest hook and the caller it reads
    _require_method(UaProcessor, "_process_message", ["self", "typeid", "requesthdr", "seqhdr", "body"],
                    coroutine=True)
    _require_state(UaProcessor, "_connection", "session")
    _require_state(SecureConnection, "security_policy")
    missing = {"Mode", "URI", "peer_certificate", "host_certificate"} - set(inspect.get_annotations(SecurityPolicy))
    if missing:
        raise AsyncuaIncompatible(f"dropped SecurityPolicy.{', SecurityPolicy.'.join(sorted(missing))}")
    _require_state(InternalSession, "user", "session_id", "iserver")
    # 2. and 3. session activation and close
    _require_method(InternalSession, "activate_session", ["self", "params", "peer_certificate"], coroutine=False)
    _require_method(InternalSession, "close_session", ["self", "delete_subs"], coroutine=True)
    _require_state(InternalSession, "state")
    if "Closed" not in SessionState.__members__:
        raise AsyncuaIncompatible("has no SessionState.Closed")
    # 4. the identity swap
    _require_state(Server, "iserver", "bserver", "_policies")
    _require_method(Server, "_setup_server_nodes", ["self"], coroutine=True)
    _require_state(InternalServer, "certificate", "private_key", "endpoints", "aspace", "user_manager")
    _require_method(InternalServer, "set_user_manager", ["self", "user_manager"], coroutine=False)
    # 5. the channel list
    _require_state(BinaryServer, "clients")
    _require_state(OPCUAProtocol, "transport", "processor")
    # 6. the client's policy
    _require_state(Client, "security_policy", "uaclient")
    _require_method(UaClient, "set_security", ["self", "policy"], coroutine=False)
    # 7. method callbacks
    _require_method(AddressSpace, "__getitem__", ["self", "nodeid"], coroutine=False)
    _require_state(NodeData, "call")
    # 8. structures
    register = ua.register_extension_object
    if _parameters(register) != ["name", "encoding_nodeid", "class_type", "datatype_nodeid"]:
        raise AsyncuaIncompatible(f"changed ua.register_extension_object{inspect.signature(register)}")
    # 9. channel refusals
    _require_method(SecureConnection, "receive_from_header_and_body", ["self", "header", "body"], coroutine=False)
    _require_method(UASocketProtocol, "_process_received_message", ["self", "msg"], coroutine=False)
    _require_method(UASocketProtocol, "_process_received_data", ["self", "data"], coroutine=False)
    # 10. per-subscription event delivery
    _require_state(InternalServer, "subscription_service", "_external_sessions")
    _require_state(SubscriptionService, "subscriptions")
    _require_state(InternalSubscription, "session_id")
    _require_method(SubscriptionService, "trigger_event", ["self", "event", "subscription_id"], coroutine=True)
    _require_state(InternalSubscription, "_triggered_events", "_publishing_enabled")
    _require_state(InternalSession, "subscription_service")
    # 11. the clock task a stop waits for
    _require_state(InternalServer, "time_task", "_time_task_stop")
    _require_method(InternalServer, "_set_current_time_loop", ["self"], coroutine=True)
    # 12. the presented chain
    _require_state(SecurityPolicyFactory, "certificate", "certificate_chain")
    if "host_cert_chain" not in _parameters(SecurityPolicyNone.__init__) \
            or "host_certificate_chain" not in inspect.get_annotations(SecurityPolicy):
        raise AsyncuaIncompatible("changed how a SecurityPolicy takes its certificate chain (host_cert_chain)")
    # 13. the peer's chain
    _require_method(SecureConnection, "select_policy", ["self", "uri", "peer_certificate", "mode"], coroutine=False)
    _require_state(UaClient, "protocol")
    _require_state(UASocketProtocol, "_connection")
    # 14. whether a server still listens
    _require_state(BinaryServer, "_server")
    # 15. the standard address space, copied
    _require_method(InternalServer, "load_standard_address_space", ["self", "shelf_file"], coroutine=True)
    if _parameters(standard_address_space.fill_address_space) != ["nodeservice"]:
        raise AsyncuaIncompatible("changed standard_address_space.fill_address_space"
                                  f"{inspect.signature(standard_address_space.fill_address_space)}")
    _require_state(NodeManagementService, "_aspace")
    _require_state(AddressSpace, "_nodes")
    _require_state(NodeData, "nodeid", "attributes", "references", "call")
    _require_state(AttributeValue, "value", "value_callback", "value_setter", "datachange_callbacks")
    if {"Value", "StatusCode", "SourceTimestamp", "ServerTimestamp"} - set(_DATA_VALUE_FIELDS) \
            or {"Value", "VariantType", "Dimensions", "is_array"} - set(_VARIANT_FIELDS):
        raise AsyncuaIncompatible(f"changed the fields of DataValue {_DATA_VALUE_FIELDS} or Variant {_VARIANT_FIELDS}")


_check()
