"""Who may use the console and the REST API: users, their second factor, sessions, API tokens, lockout.

Users have a role (viewer < operator < ca-admin), an argon2id password hash and a TOTP secret (RFC 6238, 30 s
steps, 6 digits). Everything is in the store, so every instance on it (several `otpki serve` behind a load
balancer) shares sessions, lockouts and the TOTP replay memory:

- A TOTP code is accepted for one time step at most once per user: the last accepted step is remembered and only a
  later one passes (compare-and-set in the store, so two instances cannot both accept one code).
- Failed logins count per user and per client address within a window; at the limit the subject is locked out for a
  while, also for the right password (an attacker guessing slowly from many addresses still hits the per-user lock).
- Session ids and API tokens are 32 random bytes; only their SHA-256 is stored. A salted slow hash (argon2) is
  for secrets people choose; a 256-bit random value cannot be guessed, so a fast hash loses nothing and keeps the
  per-request lookup an index hit.

Every change (users, tokens, logins, lockouts, logouts) is audited in the transaction that makes it. TOTP secrets
are sealed at rest (AES-256-GCM, trustlists/secret_box.py): a copy of the store alone does not give them away.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from trustlists import audit
from trustlists.clock import from_epoch, to_epoch
from trustlists.context import EngineContext
from trustlists.errors import InvalidInput, NotFound, OtpkiError
from trustlists.request_guard import RateLimit, RequestGuard
from trustlists.secret_box import SecretBox
from trustlists.store.base import StoreReader, StoreWriter
from trustlists.store.rows import LoginFailuresRow, WebSessionRow, WebTokenRow, WebUserRow

if TYPE_CHECKING:
    from argon2 import PasswordHasher

__all__ = ["AccountPolicy", "Accounts", "ApiToken", "ConsoleSession", "ConsoleUser", "LoginRefused",
           "NewCredentials", "Role", "hash_secret"]

TOTP_STEP_S = 30
TOTP_DIGITS = 6
MIN_PASSWORD_LENGTH = 10
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
STAGE_PASSWORD = "password"  # the password was right; the TOTP code is still due
STAGE_FULL = "full"
LOGIN_SCOPE = "console-login"  # the request guard's buckets of login attempts, per client address


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    CA_ADMIN = "ca-admin"

    def allows(self, needed: Role) -> bool:
        return _RANK[self] >= _RANK[needed]


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.CA_ADMIN: 2}


class AccountPolicy(BaseModel):
    """Lockout and session lifetime: what the console's settings decide."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_failures: int = Field(default=5, ge=1, description="Failed logins of one user that lock it out")
    address_failures: int = Field(default=20, ge=1, description="Failed logins from one address that lock it out")
    failure_window_s: int = Field(default=900, ge=1, description="Window the failures are counted in (seconds)")
    lockout_s: int = Field(default=900, ge=1, description="How long a lockout lasts (seconds)")
    login_burst: int = Field(default=10, ge=1, description="Login attempts one address may make at once")
    login_per_minute: float = Field(default=10.0, gt=0,
                                    description="Login attempts one address earns back per minute")
    session_ttl_s: int = Field(default=8 * 3600, ge=60, description="Lifetime of a console session (seconds)")
    login_ttl_s: int = Field(default=300, ge=30, description="Time between password and TOTP code (seconds)")


class ConsoleUser(BaseModel):
    name: str
    role: Role
    created_at: datetime


class NewCredentials(BaseModel):
    """What `otpki users add` and `reset-totp` show once: the secret goes into the user's authenticator app."""

    user: ConsoleUser
    totp_secret: str
    provisioning_uri: str


class ConsoleSession(BaseModel):
    user: ConsoleUser
    csrf_token: str
    stage: str
    expires_at: datetime

    @property
    def complete(self) -> bool:
        return self.stage == STAGE_FULL


class ApiToken(BaseModel):
    name: str
    role: Role
    user_name: str | None  # whose TOTP the token's CA-admin actions need
    created_at: datetime
    revoked: bool


class LoginRefused(OtpkiError):
    """reason: bad_credentials (unknown user or wrong password, not told apart), locked_out, rate_limited (too many
    attempts from one address, right or wrong), totp_invalid,
    totp_replayed (a code accepted before), session_invalid (no or expired login in progress)."""

    reason = "login_refused"


def hash_secret(raw: str) -> str:
    """The stored form of a session id or API token (see the module docstring for why SHA-256)."""
    return hashlib.sha256(raw.encode()).hexdigest()


def _password_hasher() -> PasswordHasher:
    from argon2 import PasswordHasher  # imported on first use: off the start-up of every engine user

    return PasswordHasher()  # argon2id with the library's (RFC 9106 low-memory) parameters


# A hash to verify against when the user does not exist: the answer takes as long as for a real user.
_DUMMY_HASH: list[str] = []


class Accounts:
    """`engine.accounts`."""

    def __init__(self, ctx: EngineContext, guard: RequestGuard, box: SecretBox) -> None:
        self._ctx = ctx
        self._guard = guard
        self._box = box

    def prepare_secrets_key(self) -> None:
        """Make the key that seals the TOTP secrets, if there is none yet (`otpki init`)."""
        self._box.ensure_key()

    # -- users -----------------------------------------------------------------------------------------
    def add_user(self, name: str, role: Role | str, password: str, *, actor: str,
                 issuer: str = "otpki") -> NewCredentials:
        role = _role(role)
        _check_name(name, "user")
        if len(password) < MIN_PASSWORD_LENGTH:
            raise InvalidInput(f"the password must have at least {MIN_PASSWORD_LENGTH} characters",
                               reason="password_too_short")
        password_hash = _password_hasher().hash(password)  # slow on purpose: outside the transaction
        secret = _new_totp_secret()
        sealed = self._box.seal(secret, context=name)  # the key file is read (or made) outside the transaction
        now = self._ctx.clock()
        with self._ctx.store.transaction() as tx:
            tx.insert_web_user(WebUserRow(name, role.value, password_hash, sealed, 0, to_epoch(now)))
            audit.append(tx, actor=actor, action="user.add", subject=name, details={"role": role.value}, at=now)
        user = ConsoleUser(name=name, role=role, created_at=from_epoch(to_epoch(now)))
        return NewCredentials(user=user, totp_secret=secret, provisioning_uri=_uri(secret, name, issuer))

    def list_users(self) -> list[ConsoleUser]:
        with self._ctx.store.read() as tx:
            return [_user(row) for row in tx.list_web_users()]

    def get_user(self, name: str) -> ConsoleUser:
        with self._ctx.store.read() as tx:
            row = tx.get_web_user(name)
        if row is None:
            raise NotFound(f"no console user {name!r}", reason="unknown_user")
        return _user(row)

    def remove_user(self, name: str, *, actor: str) -> None:
        """The user and their sessions go at once (a logged-in browser is logged out on its next request)."""
        with self._ctx.store.transaction() as tx:
            if not tx.delete_web_user(name):
                raise NotFound(f"no console user {name!r}", reason="unknown_user")
            audit.append(tx, actor=actor, action="user.remove", subject=name, at=self._ctx.clock())

    def reset_totp(self, name: str, *, actor: str, issuer: str = "otpki") -> NewCredentials:
        """A new TOTP secret (a lost phone); the user's sessions end."""
        secret = _new_totp_secret()
        sealed = self._box.seal(secret, context=name)
        with self._ctx.store.transaction() as tx:
            if not tx.set_web_user_totp(name, sealed):
                raise NotFound(f"no console user {name!r}", reason="unknown_user")
            tx.delete_web_user_sessions(name)
            audit.append(tx, actor=actor, action="user.reset_totp", subject=name, at=self._ctx.clock())
            row = tx.get_web_user(name)
        assert row is not None
        return NewCredentials(user=_user(row), totp_secret=secret, provisioning_uri=_uri(secret, name, issuer))

    # -- logging in ------------------------------------------------------------------------------------
    def login_password(self, name: str, password: str, *, client: str, policy: AccountPolicy
                       ) -> tuple[str, ConsoleSession]:
        """First step: the password. A session id (for the cookie) whose session still needs the TOTP code.

        LoginRefused(locked_out) while the user or the address is locked out, whatever the password;
        LoginRefused(bad_credentials) for an unknown user or a wrong password (the same answer, the same time).
        """
        row = self._check_password(name, password, client=client, policy=policy)
        return self._new_session(row, STAGE_PASSWORD, policy.login_ttl_s, client=client, audit_login=False)

    def login_totp(self, session_id: str, code: str, *, client: str, policy: AccountPolicy
                   ) -> tuple[str, ConsoleSession]:
        """Second step: the TOTP code, for a session past its password step. A new, complete session replaces it
        (a new id and CSRF token: an id someone planted or saw before the login is worth nothing after it)."""
        id_hash = hash_secret(session_id)
        now = self._ctx.clock()
        with self._ctx.store.read() as tx:
            found = tx.get_web_session(id_hash)
        if found is None or found.stage != STAGE_PASSWORD or found.expires_at <= to_epoch(now):
            raise LoginRefused("the login expired: enter the password again", reason="session_invalid")
        self.check_totp(found.user_name, code, client=client, policy=policy)
        with self._ctx.store.transaction() as tx:
            if not tx.delete_web_session(id_hash):
                raise LoginRefused("the login expired: enter the password again", reason="session_invalid")
            row = tx.get_web_user(found.user_name)
            if row is None:
                raise LoginRefused("unknown user or wrong password", reason="bad_credentials")
            return self._new_session(row, STAGE_FULL, policy.session_ttl_s, client=client, audit_login=True)

    def login(self, name: str, password: str, code: str, *, client: str, policy: AccountPolicy
              ) -> tuple[str, ConsoleSession]:
        """Both steps at once (the REST API's login): a complete session."""
        row = self._check_password(name, password, client=client, policy=policy)
        self.check_totp(name, code, client=client, policy=policy)
        return self._new_session(row, STAGE_FULL, policy.session_ttl_s, client=client, audit_login=True)

    def check_totp(self, name: str, code: str, *, client: str, policy: AccountPolicy) -> None:
        """Accept `code` for the user once: what a login and every CA-admin action asks.

        LoginRefused(totp_replayed) for a code whose time step was accepted before (also on another instance),
        totp_invalid for a wrong one (counted towards the lockout like a wrong password), locked_out while locked.
        """
        now = self._ctx.clock()
        with self._ctx.store.read() as tx:
            self._refuse_locked(tx, name, client, now)
            row = tx.get_web_user(name)
        if row is None:
            raise LoginRefused("unknown user or wrong password", reason="bad_credentials")
        import pyotp

        totp = pyotp.TOTP(self._box.open(row.totp_secret, context=name), digits=TOTP_DIGITS, interval=TOTP_STEP_S)
        current = totp.timecode(now)
        code = code.strip()
        matched = [step for step in (current - 1, current, current + 1)
                   if hmac.compare_digest(totp.generate_otp(step), code)]
        refused: LoginRefused | None = None
        with self._ctx.store.transaction() as tx:  # the refusal is recorded, so it is raised after the commit
            if not matched:
                self._record_failure(tx, name, client, now, policy, why="totp_invalid")
                refused = LoginRefused("wrong TOTP code", reason="totp_invalid")
            elif not tx.advance_totp_step(name, matched[0]):
                audit.append(tx, actor=name, action="console.totp_replayed", subject=name,
                             details={"client": client}, at=now)
                refused = LoginRefused("this TOTP code was used already: wait for the next one",
                                       reason="totp_replayed")
        if refused is not None:
            raise refused

    def session(self, session_id: str) -> ConsoleSession | None:
        """The session of a cookie's id; None when unknown or expired (or its user was removed)."""
        now = to_epoch(self._ctx.clock())
        with self._ctx.store.read() as tx:
            found = tx.get_web_session(hash_secret(session_id))
            if found is None or found.expires_at <= now:
                return None
            user = tx.get_web_user(found.user_name)
        if user is None:
            return None
        return ConsoleSession(user=_user(user), csrf_token=found.csrf_token, stage=found.stage,
                              expires_at=from_epoch(found.expires_at))

    def logout(self, session_id: str) -> None:
        id_hash = hash_secret(session_id)
        with self._ctx.store.transaction() as tx:
            found = tx.get_web_session(id_hash)
            if found is not None and tx.delete_web_session(id_hash):
                audit.append(tx, actor=found.user_name, action="console.logout", subject=found.user_name,
                             at=self._ctx.clock())

    # -- API tokens ------------------------------------------------------------------------------------
    def create_token(self, name: str, role: Role | str, *, actor: str, user: str | None = None
                     ) -> tuple[str, ApiToken]:
        """A new token, returned once; the store keeps its hash. A ca-admin token names the user whose TOTP
        code its CA-admin actions carry (the second factor stays a person's)."""
        role = _role(role)
        _check_name(name, "token")
        if role is Role.CA_ADMIN and user is None:
            raise InvalidInput("a ca-admin token needs --user: CA-admin actions carry that user's TOTP code",
                               reason="token_needs_user")
        raw = "otpki_" + secrets.token_urlsafe(32)
        now = self._ctx.clock()
        with self._ctx.store.transaction() as tx:
            if user is not None and tx.get_web_user(user) is None:
                raise NotFound(f"no console user {user!r}", reason="unknown_user")
            tx.insert_web_token(WebTokenRow(name, role.value, user, hash_secret(raw), to_epoch(now), None))
            audit.append(tx, actor=actor, action="token.create", subject=name,
                         details={"role": role.value, "user": user}, at=now)
        return raw, ApiToken(name=name, role=role, user_name=user, created_at=from_epoch(to_epoch(now)),
                             revoked=False)

    def token(self, raw: str) -> ApiToken | None:
        """The live token a bearer presented; None for an unknown or revoked one."""
        with self._ctx.store.read() as tx:
            row = tx.get_web_token(hash_secret(raw))
        if row is None or row.revoked_at is not None:
            return None
        return _token(row)

    def list_tokens(self) -> list[ApiToken]:
        with self._ctx.store.read() as tx:
            return [_token(row) for row in tx.list_web_tokens()]

    def revoke_token(self, name: str, *, actor: str) -> None:
        with self._ctx.store.transaction() as tx:
            if not tx.revoke_web_token(name, to_epoch(self._ctx.clock())):
                raise NotFound(f"no live API token {name!r}", reason="unknown_token")
            audit.append(tx, actor=actor, action="token.revoke", subject=name, at=self._ctx.clock())

    # -- internals -------------------------------------------------------------------------------------
    def _check_password(self, name: str, password: str, *, client: str, policy: AccountPolicy) -> WebUserRow:
        from argon2.exceptions import InvalidHashError, VerificationError

        now = self._ctx.clock()
        with self._ctx.store.read() as tx:
            self._refuse_locked(tx, name, client, now)
            row = tx.get_web_user(name)
        # Every attempt, right or wrong, costs the address a token: an argon2 verification is expensive on purpose,
        # and a flood of them would be a way to take the console down.
        limit = RateLimit(burst=policy.login_burst, refill_per_s=policy.login_per_minute / 60)
        if not self._guard.take(LOGIN_SCOPE, client, limit=limit):
            raise LoginRefused("too many login attempts from this address: wait a minute", reason="rate_limited")
        hasher = _password_hasher()
        if not _DUMMY_HASH:
            _DUMMY_HASH.append(hasher.hash(secrets.token_hex(16)))
        ok: bool
        try:
            ok = hasher.verify(row.password_hash if row is not None else _DUMMY_HASH[0], password)
        except (VerificationError, InvalidHashError):
            ok = False
        if row is None or not ok:
            with self._ctx.store.transaction() as wtx:
                self._record_failure(wtx, name, client, now, policy, why="bad_credentials")
            raise LoginRefused("unknown user or wrong password", reason="bad_credentials")
        return row

    def _new_session(self, row: WebUserRow, stage: str, ttl_s: int, *, client: str, audit_login: bool
                     ) -> tuple[str, ConsoleSession]:
        session_id = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = self._ctx.clock()
        expires = to_epoch(now) + ttl_s
        with self._ctx.store.transaction() as tx:
            tx.delete_expired_web_sessions(to_epoch(now))
            tx.delete_login_failures(f"user:{row.name}")
            tx.insert_web_session(WebSessionRow(hash_secret(session_id), row.name, csrf, stage, to_epoch(now),
                                                expires))
            if audit_login:
                audit.append(tx, actor=row.name, action="console.login", subject=row.name,
                             details={"client": client}, at=now)
        return session_id, ConsoleSession(user=_user(row), csrf_token=csrf, stage=stage,
                                          expires_at=from_epoch(expires))

    @staticmethod
    def _refuse_locked(tx: StoreReader, name: str, client: str, now: datetime) -> None:
        now_s = to_epoch(now)
        for subject in (f"user:{name}", f"addr:{client}"):
            row = tx.get_login_failures(subject)
            if row is not None and row.locked_until > now_s:
                raise LoginRefused(f"too many failed logins: locked out for {row.locked_until - now_s} s",
                                   reason="locked_out")

    def _record_failure(self, tx: StoreWriter, name: str, client: str, now: datetime, policy: AccountPolicy, *,
                        why: str) -> None:
        now_s = to_epoch(now)
        audit.append(tx, actor=name, action="console.login_failed", subject=name,
                     details={"client": client, "reason": why}, at=now)
        for subject, limit in ((f"user:{name}", policy.user_failures), (f"addr:{client}", policy.address_failures)):
            tx.lock("login_failures", subject)
            row = tx.get_login_failures(subject)
            if row is None or now_s - row.window_start >= policy.failure_window_s:
                row = LoginFailuresRow(subject, 0, now_s, 0)
            failures = row.failures + 1
            locked_until = row.locked_until
            if failures >= limit:
                locked_until = now_s + policy.lockout_s
                audit.append(tx, actor=name, action="console.locked_out", subject=subject,
                             details={"failures": failures, "until": locked_until}, at=now)
                failures = 0
            tx.put_login_failures(LoginFailuresRow(subject, failures, row.window_start if failures else now_s,
                                                   locked_until))


def _role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidInput(f"unknown role {role!r}: one of {', '.join(r.value for r in Role)}",
                           reason="unknown_role") from None


def _check_name(name: str, what: str) -> None:
    if not _NAME.match(name):
        raise InvalidInput(f"invalid {what} name {name!r}: 1-64 letters, digits, '.', '_', '@', '-'",
                           reason=f"{what}_name_invalid")


def _new_totp_secret() -> str:
    import pyotp

    return pyotp.random_base32(32)  # 160 bits, RFC 4226's recommended shared-secret length


def _uri(secret: str, name: str, issuer: str) -> str:
    import pyotp

    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_STEP_S).provisioning_uri(name=name,
                                                                                          issuer_name=issuer)


def _user(row: WebUserRow) -> ConsoleUser:
    return ConsoleUser(name=row.name, role=Role(row.role), created_at=from_epoch(row.created_at))


def _token(row: WebTokenRow) -> ApiToken:
    return ApiToken(name=row.name, role=Role(row.role), user_name=row.user_name,
                    created_at=from_epoch(row.created_at), revoked=row.revoked_at is not None)
