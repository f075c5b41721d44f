"""Contract tests of opcua_gds/_asyncua_compat.py against the real asyncua: one per patch and private access.

Real asyncua servers on 127.0.0.1 and real clients over Basic256Sha256 SignAndEncrypt (and SecurityPolicy None
where the difference matters). Each test checks the behaviour the gate relies on, not only that a name exists,
so an asyncua release that keeps the name and changes what it does fails here. Tests that do not change the
server share one per module; the identity swap gets its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import pytest_asyncio
from asyncua import Client, Server, ua
from asyncua.common.connection import SecureConnection, TransportLimits
from asyncua.common.event_objects import BaseEvent
from asyncua.common.utils import Buffer
from asyncua.crypto import uacrypto
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256, SecurityPolicyNone
from asyncua.server.internal_server import InternalServer
from asyncua.ua.ua_binary import (
    struct_from_binary,
    struct_to_binary,
    uatcp_to_binary,
    variant_from_binary,
    variant_to_binary,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from opcua_gds import _asyncua_compat as compat
from opcua_gds._asyncua_compat import AsyncuaIncompatible, Caller
from opcua_gds.gds.application_record import install_application_record_type, register_application_record_class
from opcua_gds.push.target.certs import key_to_pem, self_signed
from opcua_gds.push.target.server_swap import close_channels
from trustlists.testing import eventually, free_port

WAIT = 10.0
SIGN_AND_ENCRYPT = ua.MessageSecurityMode.SignAndEncrypt
module_loop = pytest.mark.asyncio(loop_scope="module")


@dataclass(frozen=True)
class Identity:
    uri: str
    der: bytes
    key: Any
    cert_path: Path
    key_path: Path

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)


def identity(directory: Path, name: str) -> Identity:
    uri = f"urn:otpki:test:{name}"
    der, key = self_signed(name, uri, ["localhost", "127.0.0.1"])
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.der", directory / f"{name}.pem"
    cert_path.write_bytes(der)
    key_path.write_bytes(key_to_pem(key))
    return Identity(uri, der, key, cert_path, key_path)


# What the activation scope publishes, read by the user manager below (as otpki's GdsUserManager does).
activating: ContextVar[type | None] = ContextVar("compat_test_activating", default=None)
# What the call scope publishes, read by the method callback below (as otpki's GDS methods do).
calling: ContextVar[Caller | None] = ContextVar("compat_test_calling", default=None)


class RecordingUsers:
    """A user manager that records what asyncua asks it; refuses the user "nobody"."""

    def __init__(self) -> None:
        self.asked: list[tuple[str | None, type | None, bool]] = []  # (username, token type, certificate given)

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        self.asked.append((username, activating.get(), certificate is not None))
        return None if username == "nobody" else User(role=UserRole.User, name=username)


@dataclass
class Running:
    server: Server
    url: str
    identity: Identity
    holder_id: ua.NodeId
    probe_id: ua.NodeId
    gds_idx: int
    users: RecordingUsers
    directory: Path

    def client_identity(self, name: str) -> Identity:
        return identity(self.directory / "clients", name)


async def probe(parent: ua.NodeId) -> list[ua.Variant]:
    """The method every test calls: answers with the caller the call scope published, if any."""
    caller = calling.get()
    return [ua.Variant(caller.security_policy_uri if caller else "no caller", ua.VariantType.String)]


async def start_server(directory: Path, name: str) -> Running:
    server_id = identity(directory, name)
    users = RecordingUsers()
    server = Server()
    await server.init()
    url = f"opc.tcp://127.0.0.1:{free_port()}/{name}"
    server.set_endpoint(url)
    await server.set_application_uri(server_id.uri)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity, ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
    server.set_identity_tokens([ua.AnonymousIdentityToken, ua.UserNameIdentityToken, ua.X509IdentityToken])
    await server.load_certificate(server_id.der, format="der")
    await server.load_private_key(key_to_pem(server_id.key), format="pem")
    compat.set_user_manager(server, users)  # replaced after construction, as install_push_management does
    idx = await server.register_namespace("urn:otpki:test:compat")
    holder = await server.nodes.objects.add_object(idx, "Compat")
    method = await holder.add_method(idx, "Probe", probe, [], [ua.VariantType.String])
    gds_idx = await server.register_namespace("http://opcfoundation.org/UA/GDS/")
    await install_application_record_type(server, gds_idx)
    await server.start()
    return Running(server, url, server_id, holder.nodeid, method.nodeid, gds_idx, users, directory)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    running = await start_server(tmp_path_factory.mktemp("asyncua-compat"), "compat-server")
    yield running
    await running.server.stop()


@pytest.fixture(autouse=True)
def process_wide_scopes() -> Iterator[None]:
    """The hooks are per process: give back whatever scope otpki's call_context had installed."""
    saved = list(compat._call_scope), list(compat._activation_scope), list(compat._session_scope)
    yield
    compat._call_scope[:], compat._activation_scope[:], compat._session_scope[:] = saved


@contextmanager
def call_scope(seen: list[Caller]) -> Iterator[Callable[[Caller], contextlib.AbstractContextManager[None]]]:
    @contextmanager
    def scope(caller: Caller) -> Iterator[None]:
        seen.append(caller)
        token = calling.set(caller)
        try:
            yield
        finally:
            calling.reset(token)

    yield scope


async def secure_client(running: Running, me: Identity, *, username: str | None = None,
                        password: str = "pw", user_cert: Identity | None = None) -> Client:
    client = Client(running.url, timeout=WAIT, watchdog_intervall=WAIT)
    client.application_uri = me.uri
    await client.set_security(SecurityPolicyBasic256Sha256, str(me.cert_path), str(me.key_path), mode=SIGN_AND_ENCRYPT)
    if username is not None:
        client.set_user(username)
        client.set_password(password)
    if user_cert is not None:
        await client.load_client_certificate(str(user_cert.cert_path))
        await client.load_private_key(str(user_cert.key_path))
    await client.connect()
    return client


async def call_probe(running: Running, client: Client) -> str:
    return str(await client.get_node(running.holder_id).call_method(running.probe_id))



async def disconnect(*clients: Client) -> None:
    for client in clients:
        with contextlib.suppress(Exception):
            await client.disconnect()


# -- 1. the CallRequest hook -------------------------------------------------------------------------------------------

@module_loop
async def test_call_requests_run_in_the_scope_with_their_channels_caller(shared: Running) -> None:
    seen: list[Caller] = []
    me = shared.client_identity("caller")
    with call_scope(seen) as scope:
        compat.run_call_requests_in(scope)
    secure = await secure_client(shared, me, username="alice")
    plain = Client(shared.url, timeout=WAIT, watchdog_intervall=WAIT)
    await plain.connect()
    try:
        # The callback runs inside the scope, in the request's own task: it sees what the scope set.
        assert await call_probe(shared, secure) == SecurityPolicyBasic256Sha256.URI
        assert len(seen) == 1
        await secure.nodes.server.read_browse_name()  # not a CallRequest: no scope
        assert len(seen) == 1
        caller = seen[0]
        assert caller.security_mode == SIGN_AND_ENCRYPT
        assert caller.client_certificate == me.der
        assert isinstance(caller.user, User) and caller.user.name == "alice"
        assert isinstance(caller.session_id, ua.NodeId) and not caller.session_id.is_null()

        assert await call_probe(shared, plain) == SecurityPolicyNone.URI
        assert seen[1].security_mode == ua.MessageSecurityMode.None_ and not seen[1].client_certificate
        assert seen[1].session_id != caller.session_id
    finally:
        await disconnect(secure, plain)


# -- 2. the ActivateSession hook ---------------------------------------------------------------------------------------

@module_loop
async def test_activation_runs_in_the_scope_with_the_identity_token_type(shared: Running) -> None:
    @contextmanager
    def scope(token_type: type) -> Iterator[None]:
        token = activating.set(token_type)
        try:
            yield
        finally:
            activating.reset(token)

    compat.run_activations_in(scope)
    me, user_cert = shared.client_identity("activator"), shared.client_identity("activator-user")
    shared.users.asked.clear()
    clients = [await secure_client(shared, me), await secure_client(shared, me, username="bob"),
               await secure_client(shared, me, user_cert=user_cert)]
    await disconnect(*clients)
    # asyncua gives the user manager a certificate for the anonymous token too (the channel's): only the token
    # type the scope publishes tells it from an X.509 user token.
    assert shared.users.asked == [(None, ua.AnonymousIdentityToken, True),
                                  ("bob", ua.UserNameIdentityToken, True),
                                  (None, ua.X509IdentityToken, True)]


# -- 3. the CloseSession hook ------------------------------------------------------------------------------------------

@module_loop
async def test_session_close_is_reported_on_close_session_and_on_a_dropped_connection(shared: Running) -> None:
    seen: list[Caller] = []
    with call_scope(seen) as scope:
        compat.run_call_requests_in(scope)
    closed: list[ua.NodeId] = []
    compat.on_session_closed(shared.server, closed.append)
    me = shared.client_identity("closer")

    polite = await secure_client(shared, me)
    await call_probe(shared, polite)
    await polite.disconnect()  # CloseSession
    await eventually(lambda: len(closed) == 1, "the listener after CloseSession")
    assert closed == [seen[0].session_id]

    dropped = await secure_client(shared, me)
    try:
        await call_probe(shared, dropped)
        for channel in compat.live_channels(shared.server):
            if channel.peer_certificate == me.der:
                channel.abort()  # the connection dies without CloseSession
        await eventually(lambda: len(closed) == 2, "the listener after the connection dropped")
        assert closed[1] == seen[1].session_id
    finally:
        await disconnect(dropped)


# -- 4. the live identity swap -----------------------------------------------------------------------------------------

@module_loop
async def test_replaced_identity_serves_new_channels_while_open_ones_keep_theirs(tmp_path: Path) -> None:
    running = await start_server(tmp_path, "swapping-server")
    old, new = running.identity, identity(tmp_path, "swapping-server-new")
    me = running.client_identity("swap-client")
    before = after = None
    try:
        assert uacrypto.der_from_x509(compat.server_identity(running.server)[0]) == old.der
        before = await secure_client(running, me)
        await compat.replace_server_identity(running.server, new.certificate, new.key)
        assert uacrypto.der_from_x509(compat.server_identity(running.server)[0]) == new.der

        endpoints = await Client(running.url, timeout=WAIT, watchdog_intervall=WAIT).connect_and_get_server_endpoints()
        assert {bytes(e.ServerCertificate) for e in endpoints} == {new.der}
        after = await secure_client(running, me)  # set_security takes the certificate GetEndpoints names
        assert await call_probe(running, after)  # CreateSession was signed with the new key: the session works
        hosts = sorted(c.host_certificate or b"" for c in compat.live_channels(running.server))
        assert hosts == sorted([old.der, new.der])  # the open channel keeps the old certificate
        assert await call_probe(running, before)
    finally:
        await disconnect(*(c for c in (before, after) if c is not None))
        await running.server.stop()


# -- 5. the channel list -----------------------------------------------------------------------------------------------

@module_loop
async def test_live_channels_list_open_channels_and_close_ends_one(shared: Running, tmp_path: Path) -> None:
    assert compat.live_channels(Server()) == []  # not started: no channels (and no error)
    me, other = shared.client_identity("lister"), shared.client_identity("lister-2")
    first, second = await secure_client(shared, me), await secure_client(shared, other)
    try:
        mine = [c for c in compat.live_channels(shared.server) if c.peer_certificate in (me.der, other.der)]
        assert sorted(c.peer_certificate or b"" for c in mine) == sorted([me.der, other.der])
        assert {c.host_certificate for c in mine} == {shared.identity.der}

        next(c for c in mine if c.peer_certificate == me.der).close()
        await eventually(lambda: all(c.peer_certificate != me.der for c in compat.live_channels(shared.server)),
                    "the closed channel leaves the list")
        with pytest.raises((ConnectionError, asyncio.TimeoutError, ua.UaError)):
            await asyncio.wait_for(first.nodes.server.read_browse_name(), WAIT)
        assert await call_probe(shared, second)  # the other channel is untouched
    finally:
        await disconnect(first, second)


@module_loop
async def test_a_connection_the_channel_list_cannot_read_raises_instead_of_being_skipped(shared: Running) -> None:
    @dataclass
    class Unreadable:
        processor: None = None
        transport: None = None

    assert shared.server.bserver is not None
    shared.server.bserver.clients.append(Unreadable())  # type: ignore[arg-type]
    try:
        with pytest.raises(AsyncuaIncompatible, match="without a UaProcessor"):
            compat.live_channels(shared.server)
        # ApplyChanges' channel close says so too: it never closes nothing quietly and keeps old trust alive.
        with pytest.raises(AsyncuaIncompatible):
            close_channels(shared.server, lambda host, peer: True)
    finally:
        shared.server.bserver.clients.pop()


# -- 6. the client's SecureChannel policy ------------------------------------------------------------------------------

@module_loop
async def test_use_security_policy_binds_the_next_channel(shared: Running) -> None:
    me = shared.client_identity("policy-user")
    client = Client(shared.url, timeout=WAIT, watchdog_intervall=WAIT)
    client.application_uri = me.uri
    compat.use_security_policy(client, SecurityPolicyNone())
    endpoints = await client.connect_and_get_server_endpoints()  # an unsecured channel, as the policy says
    assert {bytes(e.ServerCertificate) for e in endpoints} == {shared.identity.der}

    compat.use_security_policy(client, SecurityPolicyBasic256Sha256(shared.identity.certificate, me.certificate,
                                                                    me.key, SIGN_AND_ENCRYPT))
    await client.connect()
    try:
        peers = [c.peer_certificate for c in compat.live_channels(shared.server)]
        assert me.der in peers  # the channel was opened with exactly the policy's client certificate
        assert await call_probe(shared, client)
    finally:
        await disconnect(client)

    # A policy bound to another server certificate cannot open a channel to this server.
    stranger = shared.client_identity("not-the-server")
    wrong = Client(shared.url, timeout=5, watchdog_intervall=5)
    compat.use_security_policy(wrong, SecurityPolicyBasic256Sha256(stranger.certificate, me.certificate, me.key,
                                                                   SIGN_AND_ENCRYPT))
    with pytest.raises(Exception):  # noqa: B017 - asyncua reports this as a timeout or a status, by version
        await wrong.connect()
    await disconnect(wrong)


# -- 7. the user manager, replaced after construction ------------------------------------------------------------------

@module_loop
async def test_set_user_manager_is_asked_at_every_activate_session(shared: Running) -> None:
    me = shared.client_identity("user-manager")
    shared.users.asked.clear()
    client = await secure_client(shared, me, username="carol")
    await disconnect(client)
    assert [a[0] for a in shared.users.asked] == ["carol"]
    with pytest.raises(ua.uaerrors.BadUserAccessDenied):
        await secure_client(shared, me, username="nobody")
    assert [a[0] for a in shared.users.asked] == ["carol", "nobody"]


# -- 8. method callbacks -----------------------------------------------------------------------------------------------

@module_loop
async def test_method_callback_is_what_link_method_bound(shared: Running) -> None:
    original = compat.method_callback(shared.server, shared.probe_id)
    assert original is probe

    async def wrapped(parent: ua.NodeId, *args: Any) -> list[ua.Variant]:
        answer = await original(parent, *args)
        return [ua.Variant(f"wrapped {answer[0].Value}", ua.VariantType.String)]

    shared.server.link_method(shared.server.get_node(shared.probe_id), wrapped)
    client = await secure_client(shared, shared.client_identity("wrapper"))
    try:
        assert compat.method_callback(shared.server, shared.probe_id) is wrapped
        assert (await call_probe(shared, client)).startswith("wrapped ")
    finally:
        shared.server.link_method(shared.server.get_node(shared.probe_id), probe)
        await disconnect(client)


# -- 9. a structure class under its browse name ------------------------------------------------------------------------

@module_loop
async def test_registered_structure_keeps_its_name_codec_and_survives_loading_definitions(shared: Running) -> None:
    @dataclass
    class Point:
        X: ua.Int32 = 0

    name = "OtpkiCompatPoint"
    kinds = {idx: type(name, (Point,), {"data_type": ua.NodeId(9001, idx)}) for idx in (7, 8)}
    for idx, cls in kinds.items():
        compat.register_structure(name, cls, ua.NodeId(9002, idx), ua.NodeId(9001, idx))
    assert getattr(ua, name) is kinds[8]  # the last registration owns the name
    for idx, cls in kinds.items():  # and each class keeps its own encoding id on the wire
        decoded = variant_from_binary(Buffer(variant_to_binary(ua.Variant(cls(X=idx))))).Value
        assert (decoded.X, type(decoded)) == (idx, cls)

    # The production use: bound before loading, the server's ApplicationRecordDataType is not regenerated.
    ours = register_application_record_class(shared.gds_idx)
    client = await secure_client(shared, shared.client_identity("loader"))
    try:
        await client.load_data_type_definitions()
        assert ua.ApplicationRecordDataType is ours
    finally:
        await disconnect(client)


# -- 9. channel refusals -----------------------------------------------------------------------------------------------
# A loopback server that acknowledges Hello and refuses the OpenSecureChannel (SecurityPolicy None) with `refusal`:
# the three ways servers say no, written byte for byte as they come on the wire.

def _service_fault(status: int, *strings: str) -> bytes:
    fault = ua.ServiceFault()
    fault.ResponseHeader.ServiceResult = ua.StatusCode(status)
    fault.ResponseHeader.StringTable = list(strings)
    return struct_to_binary(fault)


def conformant_err(request_id: int) -> bytes:
    """OPC 10000-6 7.1.2.5: Error and Reason."""
    return uatcp_to_binary(ua.MessageType.Error, ua.ErrorMessage(ua.StatusCode(ua.StatusCodes.BadCertificateUntrusted),
                                                                 "not in my trust list"))


def node_opcua_err(request_id: int) -> bytes:
    """node-opcua 2.157: an ERR laid out as an OPN chunk holding a ServiceFault (what test_node_opcua_push meets)."""
    body = (struct.pack("<I", 2)
            + struct_to_binary(ua.AsymmetricAlgorithmHeader(SecurityPolicyURI=SecurityPolicyBasic256Sha256.URI))
            + struct_to_binary(ua.SequenceHeader(SequenceNumber=1, RequestId=request_id))
            + _service_fault(ua.StatusCodes.BadCertificateIssuerRevocationUnknown, "certificate invalid"))
    return b"ERRF" + struct.pack("<I", 8 + len(body)) + body


def opn_service_fault(request_id: int) -> bytes:
    """OPC 10000-6 6.7.4: a ServiceFault in place of the OpenSecureChannelResponse."""
    connection = SecureConnection(SecurityPolicyNone(), TransportLimits(65535, 65535, 0, 0))
    return connection.message_to_binary(_service_fault(ua.StatusCodes.BadCertificateChainIncomplete, "no issuer"),
                                        message_type=ua.MessageType.SecureOpen, request_id=request_id)


async def refusing_server(refusal: Callable[[int], bytes]) -> tuple[asyncio.Server, str]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            hello = await reader.readexactly(8)
            await reader.readexactly(struct.unpack("<I", hello[4:8])[0] - 8)
            writer.write(uatcp_to_binary(ua.MessageType.Acknowledge, ua.Acknowledge()))
            opn = await reader.readexactly(8)
            body = Buffer(await reader.readexactly(struct.unpack("<I", opn[4:8])[0] - 8))
            body.skip(4)  # SecureChannelId
            struct_from_binary(ua.AsymmetricAlgorithmHeader, body)
            writer.write(refusal(struct_from_binary(ua.SequenceHeader, body).RequestId))
            await writer.drain()
            await reader.read()  # until the client closes
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"opc.tcp://127.0.0.1:{port}"


@pytest.mark.parametrize(("refusal", "status", "reason"), [
    (conformant_err, ua.StatusCodes.BadCertificateUntrusted, "not in my trust list"),
    (node_opcua_err, ua.StatusCodes.BadCertificateIssuerRevocationUnknown, "certificate invalid"),
    (opn_service_fault, ua.StatusCodes.BadCertificateChainIncomplete, "no issuer"),
])
async def test_a_refused_channel_fails_with_the_servers_status_and_reason(
        refusal: Callable[[int], bytes], status: int, reason: str) -> None:
    compat.read_channel_refusals()
    compat.read_channel_refusals()  # idempotent
    server, url = await refusing_server(refusal)
    try:
        client = Client(url, timeout=WAIT, watchdog_intervall=WAIT)
        with pytest.raises(ua.UaStatusCodeError) as refused:
            await asyncio.wait_for(client.connect_and_get_server_endpoints(), WAIT)
        assert refused.value.code == status
        assert getattr(refused.value, "__notes__", []) == [compat.REFUSAL_NOTE + reason]
    finally:
        server.close()
        await server.wait_closed()


def test_an_err_message_is_never_read_as_good() -> None:
    assert compat.decode_error_message(Buffer(b"\x02\x00\x00")).Error.value == ua.StatusCodes.BadUnknownResponse
    good = struct_to_binary(ua.ErrorMessage(ua.StatusCode(ua.StatusCodes.Good), "fine"))
    assert compat.decode_error_message(Buffer(good)).Error.value == ua.StatusCodes.BadUnknownResponse


# -- 10. events for chosen subscriptions only --------------------------------------------------------------------------

class Received:
    """An asyncua subscription handler that keeps the events it is notified of."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def event_notification(self, event: Any) -> None:
        self.events.append(event)


@module_loop
async def test_an_event_goes_to_the_chosen_subscription_only_and_is_held_until_published(shared: Running) -> None:
    alice_id, anonymous_id = shared.client_identity("event-alice"), shared.client_identity("event-anonymous")
    alice = await secure_client(shared, alice_id, username="alice")
    anonymous = await secure_client(shared, anonymous_id)
    try:
        seen = {"alice": Received(), "anonymous": Received()}
        subscriptions = {}
        for name, client in (("alice", alice), ("anonymous", anonymous)):
            subscription = await client.create_subscription(200, seen[name])
            await subscription.subscribe_events(client.nodes.server)
            subscriptions[name] = subscription.subscription_id
        users = dict(compat.subscribers(shared.server))
        assert users[subscriptions["alice"]].name == "alice" and users[subscriptions["anonymous"]].name is None

        channels = {c.peer_certificate: c for c in compat.live_channels(shared.server)}
        event = BaseEvent(sourcenode=ua.NodeId(ua.ObjectIds.Server), message="for alice only")
        event.emitting_node = ua.NodeId(ua.ObjectIds.Server)
        event.EventId = b"compat-event"
        await compat.deliver_event(shared.server, event, subscriptions["alice"])
        # Queued for alice's subscription (not yet published), nothing for the other one.
        assert channels[alice_id.der].has_unsent_events() and not channels[anonymous_id.der].has_unsent_events()
        await eventually(lambda: len(seen["alice"].events) == 1, "alice's subscription publishes the event")
        assert seen["alice"].events[0].Message.Text == "for alice only"
        assert not channels[alice_id.der].has_unsent_events()
        assert seen["anonymous"].events == []
    finally:
        await disconnect(alice, anonymous)


# -- 11. stopping a server without waiting out its clock ---------------------------------------------------------------

@module_loop
async def test_stop_server_cancels_the_clock_task_asyncuas_stop_waits_for(tmp_path: Path) -> None:
    """asyncua's own stop lets its clock task finish its loop (which ends only between one-second sleeps);
    stop_server cancels the task instead, and the server is stopped all the same."""
    plain = await start_server(tmp_path / "plain", "plain-server")
    clock = plain.server.iserver.time_task
    assert clock is not None and not clock.done()
    await plain.server.stop()
    assert clock.done() and not clock.cancelled()  # waited for: what stop_server spares its callers

    running = await start_server(tmp_path / "prompt", "prompt-server")
    clock = running.server.iserver.time_task
    assert clock is not None and not clock.done()
    await compat.stop_server(running.server)
    assert clock.cancelled() and running.server.iserver.time_task is None
    address = urlparse(running.url)
    with pytest.raises(OSError):  # the listener is gone
        await asyncio.open_connection(address.hostname, address.port)


# -- 12. the certificate chain a server presents -----------------------------------------------------------------------

@dataclass(frozen=True)
class IssuedIdentity:
    """An identity issued under root -> issuing CA, with the CA certificates (DER)."""

    identity: Identity
    issuing_der: bytes
    root_der: bytes


def _ca_pair(name: str) -> tuple[tuple[x509.Certificate, Any], tuple[x509.Certificate, Any]]:
    def build(subject: str, issuer: tuple[x509.Certificate, Any] | None, key: Any, *, ca: bool,
              san: list[x509.GeneralName] | None = None) -> x509.Certificate:
        now = datetime.now(UTC)
        name_ = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (x509.CertificateBuilder().subject_name(name_)
                   .issuer_name(issuer[0].subject if issuer else name_).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
                   .not_valid_after(now + timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer[1] if issuer else key, hashes.SHA256())

    root_key = rsa.generate_private_key(65537, 2048)
    root = (build(f"{name} root", None, root_key, ca=True), root_key)
    issuing_key = rsa.generate_private_key(65537, 2048)
    return root, (build(f"{name} issuing CA", root, issuing_key, ca=True), issuing_key)


def issued_identity(directory: Path, name: str) -> IssuedIdentity:
    """An RSA application identity two levels below its root, written like `identity` writes its own."""
    (root, _), issuing = _ca_pair(name)
    key = rsa.generate_private_key(65537, 2048)
    uri = f"urn:otpki:test:{name}"
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuing[0].subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri),
                                                        x509.DNSName("localhost")]), critical=False)
            .sign(issuing[1], hashes.SHA256()))
    der = cert.public_bytes(Encoding.DER)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.der", directory / f"{name}.pem"
    cert_path.write_bytes(der)
    key_path.write_bytes(key_to_pem(key))
    return IssuedIdentity(Identity(uri, der, key, cert_path, key_path), issuing[0].public_bytes(Encoding.DER),
                          root.public_bytes(Encoding.DER))


async def _endpoint_certificates(url: str) -> set[bytes]:
    client = Client(url, timeout=WAIT, watchdog_intervall=WAIT)
    return {bytes(e.ServerCertificate) for e in await client.connect_and_get_server_endpoints()}


@module_loop
async def test_a_presented_chain_goes_in_the_endpoints_and_the_open_secure_channel_response(tmp_path: Path) -> None:
    compat.keep_peer_chains()  # the client side of this process keeps what the server sent, too
    running = await start_server(tmp_path, "chain-server")
    issued = issued_identity(tmp_path, "chain-server-issued")
    me = running.client_identity("chain-client")
    clients: list[Client] = []
    try:
        assert compat.presented_chain(running.server) == [running.identity.der]  # nothing registered: the leaf
        await compat.replace_server_identity(running.server, issued.identity.certificate, issued.identity.key,
                                             [issued.issuing_der])
        assert await _endpoint_certificates(running.url) == {issued.identity.der + issued.issuing_der}
        assert compat.presented_chain(running.server) == [issued.identity.der, issued.issuing_der]

        clients.append(await secure_client(running, me))  # set_security binds to the chain's leaf
        assert compat.server_chain_seen_by(clients[0]) == [issued.identity.der, issued.issuing_der]
        assert await call_probe(running, clients[0])  # the session is signed by the leaf's key and works

        # A new identity without issuers is presented alone, on new channels; the open one keeps its chain.
        plain = identity(tmp_path, "chain-server-plain")
        await compat.replace_server_identity(running.server, plain.certificate, plain.key)
        assert await _endpoint_certificates(running.url) == {plain.der}
        clients.append(await secure_client(running, me))
        assert compat.server_chain_seen_by(clients[1]) == [plain.der]
        assert compat.server_chain_seen_by(clients[0]) == [issued.identity.der, issued.issuing_der]
    finally:
        await disconnect(*clients)
        await running.server.stop()


@module_loop
async def test_a_chain_presented_before_start_is_built_into_the_first_endpoints(tmp_path: Path) -> None:
    issued = issued_identity(tmp_path, "early-chain-server")
    server = Server()
    await server.init()
    url = f"opc.tcp://127.0.0.1:{free_port()}/early"
    server.set_endpoint(url)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity, ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
    await server.load_certificate(issued.identity.der, format="der")
    await server.load_private_key(key_to_pem(issued.identity.key), format="pem")
    await compat.present_certificate_chain(server, [issued.issuing_der])
    assert compat.presented_chain(server) == []  # not started: no endpoints yet
    await server.start()
    try:
        assert await _endpoint_certificates(url) == {issued.identity.der + issued.issuing_der}
        # A certificate loaded behind the registration's back is presented alone, never with a foreign chain.
        other = identity(tmp_path, "early-chain-other")
        server.iserver.certificate = other.certificate
        server.iserver.private_key = other.key
        await compat.present_certificate_chain(server, [])
        assert await _endpoint_certificates(url) == {other.der}
    finally:
        await server.stop()


# -- 13. the certificate chain a client sent ---------------------------------------------------------------------------

@module_loop
async def test_the_chain_a_client_sent_reaches_the_session_scope_and_the_channel_list(shared: Running,
                                                                                     tmp_path: Path) -> None:
    seen: list[tuple[bytes, ...]] = []

    @contextmanager
    def scope(chain: tuple[bytes, ...]) -> Iterator[None]:
        seen.append(chain)
        yield

    compat.run_session_creations_in(scope)
    compat.run_session_creations_in(scope)  # idempotent
    issued = issued_identity(tmp_path, "chain-sender")
    me = issued.identity
    with_chain = Client(shared.url, timeout=WAIT, watchdog_intervall=WAIT)
    with_chain.application_uri = me.uri
    await with_chain.set_security(SecurityPolicyBasic256Sha256, str(me.cert_path), str(me.key_path),
                                  mode=SIGN_AND_ENCRYPT, certificate_chain=[issued.issuing_der])
    await with_chain.connect()
    without = await secure_client(shared, me)
    try:
        # CreateSession is served inside the scope with the chain of the SecureChannel it came on.
        assert seen == [(me.der, issued.issuing_der), (me.der,)]
        chains = sorted(c.peer_chain for c in compat.live_channels(shared.server) if c.peer_certificate == me.der)
        assert chains == [(me.der,), (me.der, issued.issuing_der)]
        assert await call_probe(shared, with_chain)
        await shared.server.nodes.server.read_browse_name()
        assert len(seen) == 2  # other requests: no scope
    finally:
        await disconnect(with_chain, without)


# -- the import-time check ---------------------------------------------------------------------------------------------

# -- 14. whether a server still listens ---------------------------------------------------------------------------

async def test_is_listening_follows_the_servers_listener(tmp_path: Path) -> None:
    """What `otpki serve` asks of the GDS: True while it accepts connections, False once its listener is gone,
    whether it was stopped or its socket closed under it."""
    running = await start_server(tmp_path / "a", "listening-server")
    assert compat.is_listening(running.server)
    await compat.stop_server(running.server)
    assert not compat.is_listening(running.server)

    closed = await start_server(tmp_path / "b", "closed-server")
    try:
        assert closed.server.bserver is not None and closed.server.bserver._server is not None
        closed.server.bserver._server.close()  # the listener goes away under a running server
        assert not compat.is_listening(closed.server)
        address = urlparse(closed.url)
        with pytest.raises(OSError):
            await asyncio.open_connection(address.hostname, address.port)
    finally:
        await compat.stop_server(closed.server)


def test_the_import_check_names_the_version_it_was_written_for(monkeypatch: pytest.MonkeyPatch) -> None:
    compat._check()  # the installed asyncua passes
    monkeypatch.delattr(Server, "_setup_server_nodes")
    with pytest.raises(AsyncuaIncompatible, match=r"written for asyncua 2\.1\.0; asyncua 2\.1\.0 has no "
                                                  r"Server\._setup_server_nodes"):
        compat._check()
    monkeypatch.undo()
    monkeypatch.setattr(InternalServer, "set_user_manager", lambda self, manager, extra: None)
    with pytest.raises(AsyncuaIncompatible, match=r"changed InternalServer\.set_user_manager"):
        compat._check()
    monkeypatch.undo()

    class Renamed:
        def __init__(self) -> None:
            self.clients_list: list[object] = []

    with pytest.raises(AsyncuaIncompatible, match=r"no longer sets Renamed\.clients"):
        compat._require_state(Renamed, "clients")


async def test_each_server_gets_a_copy_of_the_standard_address_space_equal_to_a_built_one_and_its_own() -> None:
    """reuse_standard_address_space: every server's namespace 0 is the one asyncua builds, node by node, and each
    server's is its own: what one changes, in place or by a write, no other server sees."""
    compat.reuse_standard_address_space()
    built = Server()
    asyncuas_own_loader = InternalServer.load_standard_address_space.__wrapped__  # kept by functools.wraps
    await asyncuas_own_loader(built.iserver)
    servers = [Server(), Server(), Server()]
    for server in servers:
        await server.iserver.load_standard_address_space()
    assert compat._standard_nodes  # built once, for the copies
    want = built.iserver.aspace._nodes
    assert len(want) > 5000
    for server in servers:
        got = server.iserver.aspace._nodes
        assert got.keys() == want.keys()
        for node_id, node in want.items():
            twin = got[node_id]
            assert twin.nodeid == node_id and twin.call is node.call is None
            assert twin.references == node.references and twin.references is not node.references
            assert {a: v.value for a, v in twin.attributes.items()} == {a: v.value for a, v in node.attributes.items()}
            assert all(v.value_callback is None and v.value_setter is None and v.datachange_callbacks == {}
                       for v in twin.attributes.values())
    first, second, third = (server.iserver.aspace for server in servers)
    strings = ua.NodeId(ua.ObjectIds.MessageSecurityMode_EnumStrings)
    values = ua.NodeId(ua.ObjectIds.NodeClass_EnumValues)
    level = ua.NodeId(ua.ObjectIds.Server_ServiceLevel)

    def value(aspace: Any, node_id: ua.NodeId) -> Any:
        return aspace.read_attribute_value(node_id, ua.AttributeIds.Value).Value.Value

    # asyncua hands out the stored value itself, and its callers change lists in place (register_namespace appends
    # to the NamespaceArray it read): the lists, and what is in them, are the server's own.
    value(first, strings).append(ua.LocalizedText("only in first"))
    value(first, values)[0].Value = 99
    first[strings].references.clear()
    await first.write_attribute_value(level, ua.AttributeIds.Value, ua.DataValue(ua.Variant(7, ua.VariantType.Byte)))
    assert value(first, level) == 7
    fresh = Server()
    await fresh.iserver.load_standard_address_space()  # a copy made after those changes
    for other in (second, third, fresh.iserver.aspace, built.iserver.aspace):
        assert ua.LocalizedText("only in first") not in value(other, strings)
        assert value(other, values)[0].Value == 0
        assert other[strings].references
        assert value(other, level) != 7


async def test_servers_started_on_copies_keep_their_namespaces_apart(tmp_path: Path) -> None:
    """The same through the public API, on started servers: a namespace one registers is not the other's."""
    compat.reuse_standard_address_space()
    a, b = await start_server(tmp_path / "a", "copy-a"), await start_server(tmp_path / "b", "copy-b")
    try:
        assert compat._standard_nodes
        await a.server.register_namespace("urn:otpki:test:only-a")
        assert "urn:otpki:test:only-a" in await a.server.get_namespace_array()
        assert "urn:otpki:test:only-a" not in await b.server.get_namespace_array()
        async with Client(b.url, timeout=10) as client:  # and b serves namespace 0 to a client as usual
            assert await client.nodes.server.read_browse_name() == ua.QualifiedName("Server", 0)
            assert "urn:otpki:test:only-a" not in await client.get_namespace_array()
    finally:
        await compat.stop_server(a.server)
        await compat.stop_server(b.server)


START_AT_ONCE = """
import asyncio, sys
from asyncua import Server
from asyncua.server.standard_address_space import standard_address_space
from opcua_gds import _asyncua_compat as compat

built = []
fill = standard_address_space.fill_address_space
standard_address_space.fill_address_space = lambda service: (built.append(1), fill(service))[1]
compat.reuse_standard_address_space()

async def main():
    servers = [Server() for _ in range(3)]
    await asyncio.gather(*(s.iserver.load_standard_address_space() for s in servers))
    assert len({id(s.iserver.aspace._nodes) for s in servers}) == 3
    print(len(built), len(servers[2].iserver.aspace._nodes))

asyncio.run(main())
"""


async def test_servers_started_at_once_in_a_fresh_process_build_the_standard_address_space_once() -> None:
    """A plant starts its PLCs together: the first builds namespace 0 while the others wait for it, then each
    takes a copy of its own (a fresh process: this one has its template already)."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", START_AT_ONCE, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, cwd=Path(__file__).parents[2])
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    builds, nodes = out.decode().split()
    assert builds == "1" and int(nodes) > 5000
