"""What the console and the API are told by the configuration (the `[web]` settings embed `ConsoleSettings`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from trustlists.accounts import AccountPolicy


class ConsoleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secure_cookies: bool = Field(
        default=True, description="Mark session cookies Secure (sent over HTTPS only); off only for a plain-HTTP "
                                  "listener on loopback")
    accounts: AccountPolicy = Field(default_factory=AccountPolicy,
                                    description="Login lockout and session lifetimes")
    totp_issuer: str = Field(default="otpki", description="Issuer name shown in authenticator apps")
    overview_max_age_s: float = Field(
        default=5.0, ge=0, description="The plant overview is recomputed when older than this (seconds; 0: on "
                                        "every request)")
    page_size: int = Field(default=50, ge=1, le=1000, description="Lines per page of the console's lists")
