"""Who is asking: a bearer token or a session cookie, their role, the CSRF token, the TOTP code of CA-admin actions.

- `Authorization: Bearer <token>` (tokens from `otpki tokens create`) needs no CSRF token: a browser never adds
  that header on its own.
- The session cookie (`otpki_session`; `__Host-otpki_session` when Secure) is HttpOnly and SameSite=Strict; a
  state-changing request that rides on it also carries the session's CSRF token (header `X-CSRF-Token` for the
  API, the form field `csrf_token` for the console's forms), compared in constant time.
- A CA-admin action (revoke, approve) carries a fresh TOTP code of the person behind it (header `X-Otpki-Totp`, or
  the form field `totp`), accepted once (trustlists/accounts.py): a stolen session alone cannot revoke.
"""

from __future__ import annotations

import hmac
from typing import Literal

from fastapi import Request
from pydantic import BaseModel

from otpki.web.errors import ApiError
from trustlists.accounts import Role
from trustlists.blocking import run_blocking
from trustlists.engine import Engine

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
TOTP_HEADER = "X-Otpki-Totp"


class Principal(BaseModel):
    name: str  # what the audit log records: the user's name, or "token:NAME"
    role: Role
    via: Literal["session", "token"]
    totp_user: str | None  # whose TOTP code a CA-admin action needs
    csrf_token: str | None = None  # sessions only
    session_id: str | None = None


def cookie_name(secure: bool) -> str:
    # The __Host- prefix: the browser keeps it only if Secure, for this host alone and for the whole site.
    return "__Host-otpki_session" if secure else "otpki_session"


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


async def identify(request: Request, engine: Engine, *, secure: bool) -> Principal | None:
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            raise ApiError(401, "not_authenticated", "the Authorization header takes `Bearer <token>`")
        token = await run_blocking(engine.accounts.token, raw.strip())
        if token is None:
            raise ApiError(401, "not_authenticated", "unknown or revoked API token")
        return Principal(name=f"token:{token.name}", role=token.role, via="token", totp_user=token.user_name)
    session_id = request.cookies.get(cookie_name(secure))
    if not session_id:
        return None
    session = await run_blocking(engine.accounts.session, session_id)
    if session is None or not session.complete:
        return None
    return Principal(name=session.user.name, role=session.user.role, via="session", totp_user=session.user.name,
                     csrf_token=session.csrf_token, session_id=session_id)


def check_role(principal: Principal | None, needed: Role) -> Principal:
    if principal is None:
        raise ApiError(401, "not_authenticated", "log in first (a session or an API token)")
    if not principal.role.allows(needed):
        raise ApiError(403, "forbidden", f"this needs the {needed.value} role; {principal.name} is "
                                         f"{principal.role.value}")
    return principal


def check_csrf(principal: Principal, presented: str | None) -> None:
    """A state change riding on a session cookie carries the session's CSRF token."""
    if principal.via != "session":
        return
    if not presented or principal.csrf_token is None or not hmac.compare_digest(presented, principal.csrf_token):
        raise ApiError(403, "csrf_token_invalid", f"missing or wrong CSRF token (send the session's token in "
                                                  f"{CSRF_HEADER})")
