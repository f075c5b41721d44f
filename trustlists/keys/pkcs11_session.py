"""The process-wide registry of PKCS#11 modules and their logged-in sessions, and PKCS#11 errors in otpki's words.

Three properties of PKCS#11 modules shape this file:

* python-pkcs11 calls `C_Initialize(NULL)`, which tells the module the application does not use threads, and
  SoftHSM then disables all of its internal locking. Every call into a module is therefore serialised by one
  lock per module (not per backend, not per token).
* Login state belongs to the (process, token) pair, not to a session: a second `C_Login` fails with
  USER_ALREADY_LOGGED_IN *without checking the PIN*, and `C_Logout` from any session logs every session out.
  So all backends of one token in a process share one logged-in session, and a backend whose PIN differs from
  the one that logged in is told its PIN is wrong instead of silently riding on the other login.
* HSMs lock the user PIN after a few failed logins, so a rejected PIN is never tried again by that backend.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import pkcs11
from pkcs11 import exceptions as p11e

from trustlists.errors import KeyAccessError

__all__ = ["Connection", "Module", "close_quietly", "load_module", "pin_digest", "reload_module", "translate"]

# Errors after which the session (or the whole module state) is gone: reconnect once and retry.
STALE_SESSION = (
    p11e.SessionHandleInvalid,
    p11e.SessionClosed,
    p11e.UserNotLoggedIn,
    p11e.DeviceRemoved,
    p11e.TokenNotPresent,
)
# Errors after which a cached object handle is no longer valid (key deleted or recreated by another tool).
STALE_OBJECT = (p11e.ObjectHandleInvalid, p11e.KeyHandleInvalid)
_TOKEN_GONE = (
    p11e.NoSuchToken,
    p11e.MultipleTokensReturned,
    p11e.TokenNotPresent,
    p11e.TokenNotRecognised,
    p11e.DeviceRemoved,
    p11e.DeviceError,
    p11e.SlotIDInvalid,
)
_UNSUPPORTED = (
    p11e.MechanismInvalid,
    p11e.MechanismParamInvalid,
    p11e.KeySizeRange,
    p11e.DomainParamsInvalid,
    p11e.TemplateInconsistent,
    p11e.AttributeValueInvalid,
    p11e.AttributeTypeInvalid,
)


# --------------------------------------------------------------------------------------------------------
# Process-wide module and session registry
# --------------------------------------------------------------------------------------------------------


@dataclass
class Connection:
    """The one logged-in session this process holds on a token, shared by every backend for that token."""

    session: Any  # pkcs11.Session
    pin_digest: bytes  # compared against other backends' PINs; the PIN itself is kept by the backends
    users: int = 0
    keys: dict[str, Any] = field(default_factory=dict)  # key_ref -> private key object handle


@dataclass
class Module:
    path: str
    lib: Any  # pkcs11.lib
    lock: threading.RLock = field(default_factory=threading.RLock)
    connections: dict[str, Connection] = field(default_factory=dict)  # by token label
    needs_reinit: bool = False


_registry_lock = threading.Lock()
_modules: dict[str, Module] = {}


def _after_fork_in_child() -> None:
    # A forked child shares the parent's module state (and a network HSM's socket); PKCS#11 requires the
    # child to C_Initialize afresh, and locks held by other parent threads would never be released.
    global _registry_lock
    _registry_lock = threading.Lock()
    for module in _modules.values():
        module.lock = threading.RLock()
        module.connections.clear()
        module.needs_reinit = True


os.register_at_fork(after_in_child=_after_fork_in_child)


def pin_digest(pin: str) -> bytes:
    return hashlib.sha256(pin.encode("utf-8")).digest()


def load_module(module_path: str) -> Module:
    real = os.path.realpath(module_path)
    with _registry_lock:
        module = _modules.get(real)
        if module is None:
            if not os.path.isfile(real):
                raise KeyAccessError(
                    f"PKCS#11 module {module_path!r} does not exist: install the HSM vendor's PKCS#11 "
                    "library (for SoftHSM2: apt-get install softhsm2) or correct the module path in the "
                    "configuration",
                    reason="token_unavailable",
                )
            try:
                lib = pkcs11.lib(real)
            except p11e.PKCS11Error as exc:
                raise KeyAccessError(
                    f"cannot load PKCS#11 module {module_path!r}: {exc or type(exc).__name__}",
                    reason="token_unavailable",
                ) from None
            module = Module(path=real, lib=lib)
            _modules[real] = module
    return module


def reload_module(module_path: str) -> None:
    """Finalize and re-initialize a loaded module so that it rescans its slots.

    SoftHSM only sees tokens that existed when it was initialized; this is how a token added while the
    process runs becomes visible. Every session is dropped; backends and signers reconnect on next use.
    Does nothing if the module was never loaded by this process.
    """
    with _registry_lock:
        module = _modules.get(os.path.realpath(module_path))
    if module is None:
        return
    with module.lock:
        # Forget before finalizing: finalizing frees the handles, and a new session may reuse a number.
        module.connections.clear()
        try:
            module.lib.reinitialize()
        except p11e.PKCS11Error as exc:
            raise translate(exc, f"re-initializing PKCS#11 module {module_path!r}") from None
        module.needs_reinit = False


def close_quietly(session: Any) -> None:
    # Closing is best effort: the session may already be dead, and an error here must not mask the
    # error that made us drop it.
    with contextlib.suppress(p11e.PKCS11Error):
        session.close()


# --------------------------------------------------------------------------------------------------------
# Error translation
# --------------------------------------------------------------------------------------------------------


def translate(exc: p11e.PKCS11Error, doing: str) -> KeyAccessError:
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, p11e.PinLocked):
        return KeyAccessError(
            f"{doing}: the token's user PIN is locked after too many failed logins; the HSM security officer "
            "must unlock or reset it",
            reason="pin_locked",
        )
    if isinstance(exc, p11e.PinExpired):
        return KeyAccessError(
            f"{doing}: the token's user PIN has expired; set a new PIN with the HSM tools and update the "
            "configuration",
            reason="pin_expired",
        )
    if isinstance(exc, _TOKEN_GONE):
        return KeyAccessError(f"{doing}: token not available ({detail})", reason="token_unavailable")
    if isinstance(exc, _UNSUPPORTED):
        return KeyAccessError(f"{doing}: the token refused the request ({detail})",
                              reason="unsupported_key_type")
    return KeyAccessError(f"{doing}: PKCS#11 error {detail}", reason="hsm_error")
