"""[mqtt.enrollment] in otpki.toml: the enrollment service's limits.

Light (no MQTT client library, no cryptography): `otpki.config` loads it for every command; the service is
`service.py`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# The defaults, which the messages module applies too.
MAX_PAYLOAD_BYTES = 16 * 1024  # a CSR plus a two-certificate chain is ~3 KiB; anything beyond is not a request
CLOCK_SKEW_S = 300  # requests older or newer than this are stale; bounds the replay memory


class EnrollmentSettings(BaseModel):
    """Limits of the enrollment service (`[mqtt.enrollment]` in otpki.toml)."""

    model_config = ConfigDict(extra="forbid")

    max_payload_bytes: int = Field(MAX_PAYLOAD_BYTES, gt=0, description="Largest request accepted, in bytes")
    clock_skew_s: int = Field(CLOCK_SKEW_S, gt=0,
                              description="How far a request's timestamp may be from the service's clock")
    burst: int = Field(5, ge=1, description="Requests a device may send at once before the rate limit applies "
                                            "(per service in memory, and across all services in the store)")
    refill_per_s: float = Field(0.1, gt=0, description="Requests per second a device earns back after its burst")
    rejections_before_silence: int = Field(
        3, ge=0, description="rate_limited answers per exhausted in-memory bucket before the service stops "
                             "answering")
    max_concurrency: int = Field(4, ge=1, description="Requests being verified and signed at once")
    max_pending: int = Field(256, ge=1, description="Queued requests; beyond this requests are dropped")
    tracked_devices: int = Field(10_000, ge=1,
                                 description="Size of the in-memory per-device rate-limit table (names come from "
                                             "topics)")
    reconnect_delay_s: float = Field(2.0, gt=0, description="Pause between reconnects when the broker went away")
