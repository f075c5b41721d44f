"""Keeping a running engine current: CRLs re-signed before nextUpdate, revocations from other processes seen.

A long-running front (the GDS, the broker plugin) starts `run_maintenance` as an asyncio task; the
blocking work goes through the engine's executor so the event loop never waits on a signature.
"""

from __future__ import annotations

import asyncio
import logging

from pydantic import BaseModel

from trustlists.blocking import run_blocking
from trustlists.engine import Engine

log = logging.getLogger(__name__)


class MaintenanceReport(BaseModel):
    crls_published: list[str]
    revocations_loaded: int
    errors: list[str]


def maintain_once(engine: Engine, *, actor: str = "otpki-maintenance") -> MaintenanceReport:
    refresh = engine.authority.refresh_crls(actor=actor)
    published = [f"{c.ca_id}#{c.crl_number}" for c in refresh.published]
    errors = [f"CRL of {ca_id} not refreshed: {why}" for ca_id, why in refresh.failed.items()]
    loaded = engine.refresh_revocations()
    return MaintenanceReport(crls_published=published, revocations_loaded=loaded, errors=errors)


async def run_maintenance(engine: Engine, *, interval_s: float = 60.0, actor: str = "otpki-maintenance",
                          on_report: object = None) -> None:
    """Run `maintain_once` every `interval_s` seconds until cancelled."""
    while True:
        report = await run_blocking(maintain_once, engine, actor=actor)
        for error in report.errors:
            log.warning("maintenance: %s", error)
        if callable(on_report):
            on_report(report)
        await asyncio.sleep(interval_s)
