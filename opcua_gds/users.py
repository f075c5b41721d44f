"""Who may use the GDS and push methods, as configured: roles, users and the floor for their password hashes.

The `[gds.access]` settings in a module of their own without asyncua, because `otpki.config` loads them for
every command. Hashing and checking passwords, and the access decision on a session, are `opcua_gds.access`.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The argon2id parameters, the floor and the check are the engine's (EST registrars share them).
from trustlists.passwords import MEMORY_COST_KIB as MEMORY_COST_KIB
from trustlists.passwords import MIN_MEMORY_COST_KIB as MIN_MEMORY_COST_KIB
from trustlists.passwords import MIN_TIME_COST as MIN_TIME_COST
from trustlists.passwords import PARALLELISM as PARALLELISM
from trustlists.passwords import TIME_COST as TIME_COST
from trustlists.passwords import check_password_hash as check_password_hash


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
