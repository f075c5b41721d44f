"""Roles, users and the access decision every GDS and push method makes before it does anything.

Users come from configuration: username/password users (argon2id-hashed passwords) and X.509 user-token
users (by certificate SHA-256), each with GDS roles. ApplicationSelfAdmin is not a role but a privilege of
the SecureChannel: an application whose channel uses its own, engine-issued, unrevoked application
certificate may act on its own registration only.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from opcua_gds.call_context import CallContext, activating_token_type, current
from opcua_gds.nodeids import ua_status

# The [gds.access] models (light, for otpki.config) are known here too: the GDS, the push target and the
# simulators take them from here.
from opcua_gds.users import MEMORY_COST_KIB, PARALLELISM, TIME_COST, AccessConfig, GdsRole
from opcua_gds.users import CertificateUser as CertificateUser
from opcua_gds.users import PasswordUser as PasswordUser
from trustlists.engine import Engine
from trustlists.errors import OtpkiError

log = logging.getLogger(__name__)


@dataclass
class GdsUser(User):
    roles: frozenset[GdsRole] = field(default_factory=frozenset)
    authenticated: bool = False


# -- passwords ------------------------------------------------------------------------------------
_HASHER = PasswordHasher(time_cost=TIME_COST, memory_cost=MEMORY_COST_KIB, parallelism=PARALLELISM,
                         type=Type.ID)


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password: str, stored: str) -> bool:
    """The full argon2id check, every time (the hash's own parameters, not the current ones)."""
    try:
        return _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """argon2-cffi's check: was `stored` made with other parameters than hash_password uses now?"""
    try:
        return _HASHER.check_needs_rehash(stored)
    except InvalidHashError:
        return True


class VerifiedLogins:
    """Recently verified (user, password) pairs, so a fleet push does not pay argon2id on every session.

    asyncua asks the user manager synchronously inside ActivateSession, so the argon2id check (about 20 ms
    of CPU, by design) blocks the server's event loop; a push opens two sessions. A success is remembered
    for `ttl_s` as an HMAC of (stored hash, password) under a key that lives only in this process, so the
    cache holds nothing an attacker could test passwords against offline faster than the argon2id hash
    itself. Failures are never remembered: every wrong guess still costs the full hash.

    After a full successful check, argon2-cffi's rehash check runs: a hash made with other parameters than
    otpki's current ones is reported once (log warning naming the user; `otpki doctor` says it too). The
    hash is not rewritten: it lives in the operator's otpki.toml, which otpki never edits behind their back.
    """

    def __init__(self, ttl_s: float = 600.0, max_entries: int = 1024) -> None:
        self._key = secrets.token_bytes(32)
        self._ttl_s = ttl_s
        self._max = max_entries
        self._seen: dict[str, tuple[bytes, float]] = {}
        self._rehash_reported: set[tuple[str, str]] = set()

    def _mac(self, stored: str, password: str) -> bytes:
        return hmac.new(self._key, stored.encode() + b"\0" + password.encode(), hashlib.sha256).digest()

    def check(self, username: str, password: str, stored: str) -> bool:
        now = time.monotonic()
        mac = self._mac(stored, password)
        seen = self._seen.get(username)
        if seen is not None and seen[1] > now and hmac.compare_digest(seen[0], mac):
            return True
        if not verify_password(password, stored):
            return False
        self._report_rehash(username, stored)
        if len(self._seen) >= self._max:
            self._seen = {u: v for u, v in self._seen.items() if v[1] > now}
            if len(self._seen) >= self._max:
                self._seen.pop(next(iter(self._seen)))
        self._seen[username] = (mac, now + self._ttl_s)
        return True

    def _report_rehash(self, username: str, stored: str) -> None:
        if (username, stored) in self._rehash_reported or not needs_rehash(stored):
            return
        self._rehash_reported.add((username, stored))
        log.warning("GDS user %r logged in with a password hash made with other argon2 parameters than otpki's "
                    "current ones (%s): replace it in otpki.toml with the output of `otpki users hash-password`",
                    username, current_parameters())


def current_parameters() -> str:
    return f"argon2id m={MEMORY_COST_KIB} KiB, t={TIME_COST}, p={PARALLELISM}"


# -- asyncua user manager -------------------------------------------------------------------------
class GdsUserManager(UserManager):
    """asyncua calls get_user at ActivateSession; None refuses the session (BadUserAccessDenied)."""

    def __init__(self, config: AccessConfig) -> None:
        self._users = {u.name: u for u in config.users}
        self._certs = {c.certificate_sha256.lower().replace(":", ""): c for c in config.certificate_users}
        self._logins = VerifiedLogins()
        self._decoy: str | None = None

    def _decoy_hash(self) -> str:
        # Made on first use (PLC simulators start hundreds of user managers that never see an unknown user).
        if self._decoy is None:
            self._decoy = hash_password(secrets.token_urlsafe(16))
        return self._decoy

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> GdsUser | None:
        if username is not None:
            entry = self._users.get(username)
            if entry is None:
                # An unknown name costs one hash too, so timing does not tell which user names exist.
                verify_password(password or "", self._decoy_hash())
            if entry is None or password is None or not self._logins.check(username, password, entry.password_hash):
                log.warning("refused session for user %r: unknown user or wrong password", username)
                return None
            return GdsUser(role=UserRole.User, name=username, roles=frozenset(entry.roles), authenticated=True)
        if certificate is not None and activating_token_type() is ua.X509IdentityToken:
            der = certificate if isinstance(certificate, bytes) else certificate.public_bytes(Encoding.DER)
            cert_entry = self._certs.get(hashlib.sha256(der).hexdigest())
            if cert_entry is None:
                log.warning("refused session for an X.509 user token nobody is configured for")
                return None
            return GdsUser(role=UserRole.User, name=cert_entry.name, roles=frozenset(cert_entry.roles),
                           authenticated=True)
        # asyncua's built-in ruleset refuses even Read to its Anonymous role; browsing and reading stay open
        # (the GDS decides per method), so anonymous sessions get asyncua's User role and no GDS role.
        return GdsUser(role=UserRole.User, name=None, authenticated=False)


# -- decisions ------------------------------------------------------------------------------------
_MODE_RANK = {ua.MessageSecurityMode.None_: 1, ua.MessageSecurityMode.Sign: 2,
              ua.MessageSecurityMode.SignAndEncrypt: 3}


class MethodError(Exception):
    """A method refused with a specific OPC UA status code (and a reason for the log)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(reason or ua_status(code).name)
        self.code = code


def caller() -> CallContext:
    ctx = current()
    if ctx is None:  # a method reached without our wrapper installed: refuse rather than guess
        raise MethodError(ua.StatusCodes.BadUserAccessDenied, "no call context")
    return ctx


def roles_of(ctx: CallContext) -> frozenset[GdsRole]:
    user = ctx.user
    return user.roles if isinstance(user, GdsUser) else frozenset()


def require_mode(ctx: CallContext, minimum: ua.MessageSecurityMode) -> None:
    if _MODE_RANK.get(ctx.security_mode, 0) < _MODE_RANK[minimum]:
        raise MethodError(ua.StatusCodes.BadSecurityModeInsufficient,
                          f"needs {minimum.name}, channel is {ctx.security_mode.name}")


def has_any_role(ctx: CallContext, roles: set[GdsRole]) -> bool:
    return bool(roles_of(ctx) & roles)


def is_authenticated(ctx: CallContext) -> bool:
    return isinstance(ctx.user, GdsUser) and ctx.user.authenticated


def client_certificate(ctx: CallContext) -> x509.Certificate | None:
    if not ctx.client_certificate:
        return None
    try:
        return x509.load_der_x509_certificate(ctx.client_certificate)
    except ValueError:
        return None


class SelfAdmin:
    """ApplicationSelfAdmin: which registered application, if any, the caller's SecureChannel proves to be.

    The channel's client certificate must be one the engine issued (found in the inventory by fingerprint),
    not revoked and not expired; a renewed (superseded) certificate still counts until it expires, so an
    application can renew and then switch over.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def owner_id(self, ctx: CallContext) -> str | None:
        if not ctx.client_certificate:
            return None
        record = self._engine.inventory.by_fingerprint(hashlib.sha256(ctx.client_certificate).hexdigest())
        if record is None or record.owner_id is None:
            return None
        now = self._engine.now()
        if record.revoked_at is not None or not (record.not_before <= now <= record.not_after):
            return None
        return record.owner_id


P = ParamSpec("P")


def opcua_method(fn: Callable[P, Awaitable[Any]]) -> Callable[P, Awaitable[Any]]:
    """Adapt an otpki coroutine to asyncua's method-callback contract.

    asyncua turns any exception raised by a callback into BadUnexpectedError; the spec names a specific
    code for each refusal, so errors are returned as ua.StatusCode instead of raised.
    """

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
        try:
            return await fn(*args, **kwargs)
        except MethodError as exc:
            log.info("%s refused: %s", fn.__name__, exc)
            return ua_status(exc.code)
        except ua.UaStatusCodeError as exc:
            return ua_status(exc.code)
        except OtpkiError as exc:
            log.info("%s refused by the engine: %s", fn.__name__, exc.message)
            return ua_status(status_for_engine_error(exc))
        except Exception:
            log.exception("%s failed", fn.__name__)
            return ua_status(ua.StatusCodes.BadInternalError)

    return wrapper


def status_of(exc: BaseException) -> int:
    """The status code a method answers for an exception, as `opcua_method` returns it."""
    if isinstance(exc, MethodError):
        return exc.code
    if isinstance(exc, ua.UaStatusCodeError):
        return int(exc.code)
    if isinstance(exc, OtpkiError):
        return status_for_engine_error(exc)
    return ua.StatusCodes.BadInternalError


_REASON_STATUS = {
    "uri_mismatch": ua.StatusCodes.BadCertificateUriInvalid,
    "uri_missing": ua.StatusCodes.BadCertificateUriInvalid,
    "uri_not_registered": ua.StatusCodes.BadCertificateUriInvalid,
    "csr_malformed": ua.StatusCodes.BadInvalidArgument,
    "bad_signature": ua.StatusCodes.BadInvalidArgument,
    "not_found": ua.StatusCodes.BadNotFound,
    "unknown_owner": ua.StatusCodes.BadNotFound,
    "unknown_certificate": ua.StatusCodes.BadNotFound,
    "unknown_group": ua.StatusCodes.BadNotFound,
    "request_not_complete": ua.StatusCodes.BadRequestNotComplete,
    "invalid_state": ua.StatusCodes.BadInvalidState,
    "request_already_decided": ua.StatusCodes.BadInvalidState,
    "already_exists": ua.StatusCodes.BadInvalidArgument,
    "store_busy": ua.StatusCodes.BadResourceUnavailable,
    "key_access": ua.StatusCodes.BadConfigurationError,
}


def status_for_engine_error(exc: OtpkiError) -> int:
    """The OPC UA status code for an engine refusal: policy violations are argument errors."""
    if exc.reason in _REASON_STATUS:
        return _REASON_STATUS[exc.reason]
    from trustlists.errors import CsrRejected, InvalidInput, KeyAccessError, NotFound

    if isinstance(exc, NotFound):
        return ua.StatusCodes.BadNotFound
    if isinstance(exc, (CsrRejected, InvalidInput)):
        return ua.StatusCodes.BadInvalidArgument
    if isinstance(exc, KeyAccessError):
        return ua.StatusCodes.BadConfigurationError
    return ua.StatusCodes.BadInternalError
