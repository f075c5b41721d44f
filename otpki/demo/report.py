"""The demo's machine-readable report (`otpki demo --json`): steps with their checks, counts, timings."""

from __future__ import annotations

from pydantic import BaseModel, Field


class DemoStep(BaseModel):
    number: int
    name: str
    ok: bool
    detail: str
    seconds: float


class EndpointTally(BaseModel):
    """One row of the live table: an endpoint kind and how many of it are in each certificate state."""

    kind: str
    total: int = 0
    factory: int = 0  # still on the manufacturer's / self-signed identity
    enrolled: int = 0  # holds an engine-issued certificate
    renewed: int = 0
    revoked: int = 0
    refused: int = 0  # seen refused by a peer (revoked SCADA at a PLC, revoked device at the broker)


class DemoCounts(BaseModel):
    cas: int = 0
    certificates_issued: int = 0
    certificates_active: int = 0
    certificates_revoked: int = 0
    certificates_superseded: int = 0
    plcs: int = 0
    scada: int = 0
    devices: int = 0
    telemetry_messages: int = 0


class ConsoleHint(BaseModel):
    """How to open the demo's plant in the console afterwards (`otpki serve` on the demo data)."""

    add_user: str  # the command that makes a console login (prompts for a password, shows the TOTP QR code)
    command: str  # the exact command that serves the console on the demo data
    url: str
    root_ca: str  # the plant root a browser (or curl --cacert) trusts for the console's certificate


class DemoReport(BaseModel):
    ok: bool
    data_dir: str
    broker: str
    steps: list[DemoStep] = Field(default_factory=list)
    counts: DemoCounts = Field(default_factory=DemoCounts)
    endpoints: list[EndpointTally] = Field(default_factory=list)
    phase_seconds: dict[str, float] = Field(default_factory=dict)
    total_seconds: float = 0.0
    console: ConsoleHint | None = None  # set when the plant is up (every step passed)
