"""Errors as the API answers them: `{"error": {"code": ..., "message": ...}}` with a stable code.

The engine's typed errors keep their `reason` as the code; the HTTP status follows the error's kind. Pages get the
same status with the message on an HTML page (otpki/web/pages.py)."""

from __future__ import annotations

from typing import Any

from trustlists.accounts import LoginRefused
from trustlists.errors import (
    AlreadyExists,
    CsrRejected,
    InvalidInput,
    InvalidState,
    KeyAccessError,
    NotFound,
    OtpkiError,
    StoreBusy,
)


class ApiError(Exception):
    """A refusal of the web layer itself (no session, wrong role, missing CSRF token)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


_LOGIN_STATUS = {"locked_out": 429, "rate_limited": 429, "bad_credentials": 401, "session_invalid": 401,
                 "totp_invalid": 403, "totp_replayed": 403}


def from_engine(exc: OtpkiError) -> ApiError:
    if isinstance(exc, LoginRefused):
        status = _LOGIN_STATUS.get(exc.reason, 401)
    elif isinstance(exc, NotFound):
        status = 404
    elif isinstance(exc, AlreadyExists | InvalidState):
        status = 409
    elif isinstance(exc, InvalidInput | CsrRejected):
        status = 400
    elif isinstance(exc, KeyAccessError | StoreBusy):
        status = 503
    else:
        status = 400
    return ApiError(status, exc.reason, exc.message)


def body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": what, "content": {"application/json": {"example": body(code, what)}}}
    for status, code, what in (
        (400, "invalid_input", "Bad input"),
        (401, "not_authenticated", "No valid session or token"),
        (403, "forbidden", "The role does not allow it, or the CSRF token or TOTP code is missing or wrong"),
        (404, "not_found", "No such thing"),
        (409, "invalid_state", "Not in this state"),
    )
}
