"""Settings of the CRL download front (importable without the web stack, so the configuration can embed them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CrlSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_age_s: int = Field(300, ge=0, description="Longest an HTTP cache may keep a CRL (capped at its nextUpdate)")
    recheck_s: float = Field(2.0, ge=0, description="Seconds a CRL read from the store is served before the store "
                                                    "is asked for a newer one")
