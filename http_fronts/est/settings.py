"""Settings of the EST front (`[web.est]`): which certificate groups it serves under which label, the registrar
accounts that may enroll on a device's behalf, and the limits on what a client may send."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trustlists.passwords import check_password_hash

# RFC 7030 3.2.2: the label is one path segment; kept to characters that need no escaping anywhere.
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_OPERATIONS = frozenset({"cacerts", "simpleenroll", "simplereenroll", "serverkeygen", "csrattrs", "fullcmc"})


class EstRegistrar(BaseModel):
    """An account that enrolls registered devices on their behalf with HTTP Basic (a commissioning tool)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="User name of the HTTP Basic credential")
    password_hash: str = Field(description="argon2id hash from `otpki users hash-password`, never the password "
                                           "itself")
    groups: list[str] = Field(min_length=1, description="Certificate groups whose registered devices this "
                                                        "account may enroll")

    @field_validator("name")
    @classmethod
    def _no_colon(cls, value: str) -> str:
        if ":" in value or any(ord(c) < 0x20 for c in value):
            raise ValueError("a Basic user name has no ':' and no control characters (RFC 7617)")
        return value

    @field_validator("password_hash")
    @classmethod
    def _at_least_the_floor(cls, value: str) -> str:
        check_password_hash(value)  # at config load: a weak or foreign hash never reaches a login
        return value


class EstSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Serve EST (RFC 7030) at /.well-known/est/ on the HTTPS listener")
    default_group: str = Field("mqtt-device", description="Certificate group served at /.well-known/est/ "
                                                          "(no label)")
    labels: dict[str, str] = Field(default_factory=dict,
                                   description="Label -> certificate group: /.well-known/est/LABEL/ serves that "
                                               "group (e.g. {hmi = \"mqtt-device\"})")
    registrars: list[EstRegistrar] = Field(default_factory=list,
                                           description="HTTP Basic accounts that enroll devices on their behalf")
    max_body_bytes: int = Field(16384, ge=1024, le=1 << 20,
                                description="Largest request body accepted (a base64 CSR), in bytes")
    body_timeout_s: float = Field(10.0, gt=0, description="Seconds a client may take to send its request body")
    retry_after_s: int = Field(60, ge=1, description="Retry-After of a 202 answer (the request waits for an "
                                                     "administrator's approval)")
    replay_window_days: int = Field(400, ge=1, description="How long a CSR that was enrolled is remembered, so "
                                                            "the same request is never issued twice")
    rate_burst: int = Field(10, ge=1, description="Enrollment requests a device may make at once")
    rate_refill_per_s: float = Field(0.2, gt=0, description="Enrollment requests per second a device regains")

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for label in labels:
            if not _LABEL.match(label) or label in _OPERATIONS:
                raise ValueError(f"{label!r} is not usable as an EST label (letters, digits, '.', '_', '-'; not an "
                                 "operation name)")
        return labels
