"""[push] in otpki.toml: how many PLCs at once, how long each may take, and the admin logins on the PLCs.

Light (no asyncua): `otpki.config` loads it for every command; the rollout that uses it is `rollout.py`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class CredentialsMissing(LookupError):
    """A target names credentials otpki.toml does not have (a LookupError: its message prints unquoted)."""


class PushCredential(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(description="A user with the SecurityAdmin role on the PLC")
    password_env: str | None = Field(None, description="Environment variable holding the password")
    password_file: Path | None = Field(None, description="File holding the password (never otpki.toml itself); "
                                                          "relative to the data directory")


class PushSettings(BaseModel):
    """[push] in otpki.toml."""

    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(16, ge=1, le=512, description="PLCs pushed to at the same time")
    timeout_s: float = Field(120.0, gt=0, description="Give up on one PLC's push after this long")
    lease_s: float = Field(30.0, ge=1, le=3600, description="Instances on one store lease each target while "
                           "pushing it; a crashed instance's targets are taken over after this long")
    application_uri: str = Field("urn:otpki:push", description="ApplicationUri of otpki's push client")
    credentials: dict[str, PushCredential] = Field(
        default_factory=dict, description="Admin logins on PLCs, referenced by `otpki targets add --credentials`")

    def resolve(self, ref: str) -> tuple[str, str]:
        """(username, password) for a target's credentials reference."""
        import os

        cred = self.credentials.get(ref)
        if cred is None:
            raise CredentialsMissing(f"no [push.credentials.{ref}] in otpki.toml")
        if cred.password_file is not None:
            return cred.username, Path(cred.password_file).read_text().strip()
        if cred.password_env and os.environ.get(cred.password_env):
            return cred.username, os.environ[cred.password_env]
        raise CredentialsMissing(f"[push.credentials.{ref}] has no password: set password_env or password_file")
