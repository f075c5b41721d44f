"""Who is calling: the session's user, the SecureChannel's security mode and client certificate.

asyncua hands a method callback only `(parent, *args)`: not the session, not the user, not the channel.
GDS and push methods cannot decide anything without those, so `install()` has asyncua serve every CallRequest
inside a `CallContext` published in a ContextVar (the hook itself, on asyncua's per-connection request handler,
lives in `opcua_gds._asyncua_compat`). asyncua awaits coroutine method callbacks inside that same task, so the
callback reads the context of exactly the request it serves; concurrent requests on other connections run
in their own tasks and see their own context. (Synchronous callbacks run in a thread pool without the
context: every otpki method callback is a coroutine.)

Why here and not in a PermissionRuleset: a ruleset can only refuse the whole CallRequest with one
status, before any argument is looked at; the GDS has to answer per method and per argument (the caller's
own ApplicationId is allowed, someone else's is not).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from asyncua import ua

from opcua_gds import _asyncua_compat as asyncua_compat


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
# The certificate chain the client sent when it opened the SecureChannel, while its CreateSession is served:
# asyncua hands the certificate validator the leaf alone.
_session_chain: ContextVar[tuple[bytes, ...]] = ContextVar("otpki_opcua_session_chain", default=())


def activating_token_type() -> type | None:
    return _activating_token.get()


def creating_session_chain() -> tuple[bytes, ...]:
    """While a CreateSession is served: the chain its SecureChannel was opened with (leaf first); else ()."""
    return _session_chain.get()


def current() -> CallContext | None:
    """The context of the CallRequest being served, or None outside one."""
    return _current.get()


@contextmanager
def _call(caller: asyncua_compat.Caller) -> Iterator[None]:
    token = _current.set(CallContext(user=caller.user, security_mode=caller.security_mode,
                                     security_policy_uri=caller.security_policy_uri,
                                     client_certificate=caller.client_certificate, session_id=caller.session_id))
    try:
        yield
    finally:
        _current.reset(token)


@contextmanager
def _activation(token_type: type) -> Iterator[None]:
    token = _activating_token.set(token_type)
    try:
        yield
    finally:
        _activating_token.reset(token)


@contextmanager
def _session_creation(chain: tuple[bytes, ...]) -> Iterator[None]:
    token = _session_chain.set(chain)
    try:
        yield
    finally:
        _session_chain.reset(token)


def install() -> None:
    """Publish the CallContext, the activating token type and the chain of a session being created, for every
    server in this process; idempotent."""
    asyncua_compat.run_call_requests_in(_call)
    asyncua_compat.run_activations_in(_activation)
    asyncua_compat.run_session_creations_in(_session_creation)
