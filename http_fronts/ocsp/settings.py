"""Settings of the OCSP front (what the engine signs is `[pki.ocsp]`, trustlists.policy.OcspPolicy)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class OcspSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A request for one certificate is about 80-120 bytes; a signed one with its signer's chain a few kB.
    max_request_bytes: int = Field(8192, ge=256, le=1 << 20, description="Largest OCSP request accepted, in bytes "
                                                                        "(POST body, or the DER inside a GET URL)")
    body_timeout_s: float = Field(10.0, gt=0, description="Seconds a client may take to send a POST body")
