"""Password hashes of configured accounts (GDS users, EST registrars): argon2id, the floor a stored hash must
meet, and the check. One implementation for every front that takes a password.

New hashes: argon2id with OWASP's minimum parameters (Password Storage Cheat Sheet: 19 MiB, 2 passes, 1 lane).
Fronts check passwords on every attempt and never cache a wrong one, so every guess costs one hash: about 20 ms
here (RFC 9106's 64 MiB/3 passes/4 lanes profile costs about 100 ms).
"""

from __future__ import annotations

from typing import Any

__all__ = ["MEMORY_COST_KIB", "MIN_MEMORY_COST_KIB", "MIN_TIME_COST", "PARALLELISM", "TIME_COST",
           "check_password_hash", "hash_password", "needs_rehash", "verify_password"]

MEMORY_COST_KIB = 19 * 1024
TIME_COST = 2
PARALLELISM = 1
# The floor: a stored hash below it is refused when the configuration is loaded.
MIN_MEMORY_COST_KIB = MEMORY_COST_KIB
MIN_TIME_COST = TIME_COST
_HOW_TO_FIX = "make one with `otpki users hash-password` and put it in the configuration"

_hasher: Any = None


def _get_hasher() -> Any:
    # argon2 is imported only when a password is hashed or checked: it costs every CLI command 15 ms.
    global _hasher
    if _hasher is None:
        from argon2 import PasswordHasher, Type

        _hasher = PasswordHasher(time_cost=TIME_COST, memory_cost=MEMORY_COST_KIB, parallelism=PARALLELISM,
                                 type=Type.ID)
    return _hasher


def check_password_hash(stored: str) -> None:
    """Raise ValueError (saying what to do) unless `stored` is an argon2id hash at or above the floor."""
    from argon2 import Type, extract_parameters
    from argon2.exceptions import InvalidHashError

    if stored.startswith("scrypt$"):
        raise ValueError(f"is an scrypt hash of an earlier otpki, no longer accepted: {_HOW_TO_FIX}")
    try:
        params = extract_parameters(stored)
    except InvalidHashError:
        raise ValueError(f"is not an argon2id password hash: {_HOW_TO_FIX}") from None
    if params.type is not Type.ID:
        raise ValueError(f"is an {params.type.name.lower()} hash, otpki needs argon2id: {_HOW_TO_FIX}")
    if params.memory_cost < MIN_MEMORY_COST_KIB or params.time_cost < MIN_TIME_COST:
        raise ValueError(f"costs m={params.memory_cost} KiB, t={params.time_cost}, below otpki's floor of "
                         f"m={MIN_MEMORY_COST_KIB} KiB, t={MIN_TIME_COST}: {_HOW_TO_FIX}")


def hash_password(password: str) -> str:
    return str(_get_hasher().hash(password))


def verify_password(password: str, stored: str) -> bool:
    """The full argon2id check, every time (the hash's own parameters, not the current ones)."""
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return bool(_get_hasher().verify(stored, password))
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """argon2-cffi's check: was `stored` made with other parameters than hash_password uses now?"""
    from argon2.exceptions import InvalidHashError

    try:
        return bool(_get_hasher().check_needs_rehash(stored))
    except InvalidHashError:
        return True
