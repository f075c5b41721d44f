"""Who may use the GDS and push methods, as configured: roles, users and the floor for their password hashes.

The `[gds.access]` settings in a module of their own without asyncua, because `otpki.config` loads them for
every command. Hashing and checking passwords, and the access decision on a session, are `opcua_gds.access`.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator


class GdsRole(StrEnum):
    DISCOVERY_ADMIN = "DiscoveryAdmin"
    CERTIFICATE_AUTHORITY_ADMIN = "CertificateAuthorityAdmin"
    REGISTRATION_AUTHORITY_ADMIN = "RegistrationAuthorityAdmin"
    SECURITY_ADMIN = "SecurityAdmin"


class PasswordUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="User name of the UserNameIdentityToken")
    password_hash: str = Field(description="argon2id hash from `otpki users hash-password`, never the password "
                                           "itself")
    roles: list[GdsRole] = Field(default_factory=list, description="GDS roles granted")

    @field_validator("password_hash")
    @classmethod
    def _at_least_the_floor(cls, value: str) -> str:
        check_password_hash(value)  # at config load: a weak or foreign hash never reaches a login
        return value


class CertificateUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="A name for the audit log")
    certificate_sha256: str = Field(description="SHA-256 of the DER of the X.509 user-token certificate")
    roles: list[GdsRole] = Field(default_factory=list, description="GDS roles granted")


class AccessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: list[PasswordUser] = Field(default_factory=list)
    certificate_users: list[CertificateUser] = Field(default_factory=list)


# -- passwords ------------------------------------------------------------------------------------
# New hashes: argon2id with OWASP's minimum parameters (Password Storage Cheat Sheet: 19 MiB, 2 passes,
# 1 lane). asyncua checks passwords synchronously inside ActivateSession, on the server's event loop, and a
# wrong password is never cached, so every guess costs the loop one hash: about 20 ms here (RFC 9106's
# 64 MiB/3 passes/4 lanes profile costs about 100 ms).
MEMORY_COST_KIB = 19 * 1024
TIME_COST = 2
PARALLELISM = 1
# The floor: a stored hash below it is refused when the configuration is loaded.
MIN_MEMORY_COST_KIB = MEMORY_COST_KIB
MIN_TIME_COST = TIME_COST
_HOW_TO_FIX = "make one with `otpki users hash-password` and put it in gds.access.users"


def check_password_hash(stored: str) -> None:
    """Raise ValueError (saying what to do) unless `stored` is an argon2id hash at or above the floor."""
    from argon2 import Type, extract_parameters  # only when users are configured: it costs every command 15 ms
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
