"""Who is calling: the session's user, the SecureChannel's security mode and client certificate.

asyncua hands a method callback only `(parent, *args)`: not the session, not the user, not the channel.
GDS and push methods cannot decide anything without those, so `install()` wraps asyncua's per-connection
request handler (`UaProcessor._process_message`) to publish a `CallContext` in a ContextVar for the
duration of each CallRequest. asyncua awaits coroutine method callbacks inside that same task, so the
callback reads the context of exactly the request it serves; concurrent requests on other connections run
in their own tasks and see their own context. (Synchronous callbacks run in a thread pool without the
context: every otpki method callback is a coroutine.)

Why here and not in a PermissionRuleset: a ruleset can only refuse the whole CallRequest with one
status, before any argument is looked at; the GDS has to answer per method and per argument (the caller's
own ApplicationId is allowed, someone else's is not).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from asyncua import ua
from asyncua.server.internal_session import InternalSession
from asyncua.server.uaprocessor import UaProcessor

_CALL_REQUEST = ua.NodeId(ua.ObjectIds.CallRequest_Encoding_DefaultBinary)
log = logging.getLogger(__name__)
# Per server (keyed by its InternalServer, weakly: stopped test servers must not be kept alive): what to do
# when one of its sessions closes, by CloseSession, timeout or a dropped connection.
_close_listeners: weakref.WeakKeyDictionary[Any, Callable[[InternalSession], None]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class CallContext:
    user: Any  # the asyncua User the session was activated with (an otpki GdsUser with our user manager)
    security_mode: ua.MessageSecurityMode
    security_policy_uri: str
    client_certificate: bytes | None  # DER of the SecureChannel's client (application) certificate
    session_id: ua.NodeId | None


_current: ContextVar[CallContext | None] = ContextVar("otpki_opcua_call_context", default=None)
# The identity token type being activated: asyncua passes the channel's client certificate to the user
# manager for anonymous tokens too, so the manager could not otherwise tell them from X.509 user tokens.
_activating_token: ContextVar[type | None] = ContextVar("otpki_opcua_activating_token", default=None)


def activating_token_type() -> type | None:
    return _activating_token.get()


def current() -> CallContext | None:
    """The context of the CallRequest being served, or None outside one."""
    return _current.get()


def on_session_closed(iserver: Any, listener: Callable[[InternalSession], None]) -> None:
    """Call `listener(session)` whenever a session of this server closes (push transactions die with it)."""
    install()
    _close_listeners[iserver] = listener


def install() -> None:
    """Wrap asyncua's request handler and session activation once per process; idempotent."""
    _install_activation_hook()
    _install_close_hook()
    original = UaProcessor._process_message
    if getattr(original, "_otpki_call_context", False):
        return

    async def process_message(self: UaProcessor, typeid: ua.NodeId, requesthdr: Any, seqhdr: Any, body: Any) -> Any:
        if typeid != _CALL_REQUEST:
            return await original(self, typeid, requesthdr, seqhdr, body)
        policy = self._connection.security_policy
        session = self.session
        token = _current.set(CallContext(
            user=session.user if session is not None else None,
            security_mode=getattr(policy, "Mode", ua.MessageSecurityMode.None_),
            security_policy_uri=getattr(policy, "URI", "http://opcfoundation.org/UA/SecurityPolicy#None"),
            client_certificate=getattr(policy, "peer_certificate", None),
            session_id=getattr(session, "session_id", None),
        ))
        try:
            return await original(self, typeid, requesthdr, seqhdr, body)
        finally:
            _current.reset(token)

    process_message._otpki_call_context = True  # type: ignore[attr-defined]
    UaProcessor._process_message = process_message  # type: ignore[method-assign]


def _install_activation_hook() -> None:
    original = InternalSession.activate_session
    if getattr(original, "_otpki_call_context", False):
        return

    def activate_session(self: InternalSession, params: ua.ActivateSessionParameters,
                         peer_certificate: bytes | None) -> Any:
        token = params.UserIdentityToken
        is_null = isinstance(token, ua.ExtensionObject) and token.TypeId == ua.NodeId(ua.ObjectIds.Null)
        reset = _activating_token.set(ua.AnonymousIdentityToken if is_null or token is None else type(token))
        try:
            return original(self, params, peer_certificate)
        finally:
            _activating_token.reset(reset)

    activate_session._otpki_call_context = True  # type: ignore[attr-defined]
    InternalSession.activate_session = activate_session  # type: ignore[method-assign]


def _install_close_hook() -> None:
    original = InternalSession.close_session
    if getattr(original, "_otpki_call_context", False):
        return

    async def close_session(self: InternalSession, delete_subs: bool = True) -> None:
        try:
            await original(self, delete_subs)
        finally:
            listener = _close_listeners.get(self.iserver)
            if listener is not None:
                try:
                    listener(self)
                except Exception:  # a listener's bug must not keep asyncua from closing the session
                    log.exception("session-close listener failed")

    close_session._otpki_call_context = True  # type: ignore[attr-defined]
    InternalSession.close_session = close_session  # type: ignore[method-assign]
