"""Keeping a running engine current: CRLs re-signed before nextUpdate, revocations from other processes seen.

A long-running front (the GDS, the broker plugin) starts `run_maintenance` as an asyncio task; the
blocking work goes through the engine's executor so the event loop never waits on a signature.

Several instances on one store elect one leader for the singleton work (re-signing CRLs): the holder of the
lease `leader:maintenance` (trustlists.leases), renewed every third of its duration. When the leader dies, its
lease expires after `lease_s` of the store's clock and the next instance to ask takes it over (audited): with
the defaults a new leader re-signs within 15 s + 5 s. Every instance, leader or not, refreshes its own
revocation index. (Re-signing twice would be harmless, CRL numbers stay gap-free under the store's locks, but it
would publish CRLs nobody needs and make every broker reload them.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

from pydantic import BaseModel, Field

from trustlists.blocking import run_blocking
from trustlists.engine import Engine
from trustlists.leases import LEADER_MAINTENANCE

log = logging.getLogger(__name__)

LEASE_S = 15.0


class MaintenanceReport(BaseModel):
    crls_published: list[str]
    revocations_loaded: int
    errors: list[str]
    leader: bool = True  # this instance did the singleton work (re-signing CRLs, issuing OCSP signers)
    ocsp_signers_issued: list[str] = Field(default_factory=list)  # "<CA id>#<serial>" of each new OCSP signer
    tally_rows_folded: int = 0  # rows of the overview's certificate tallies merged or dropped (the leader's)


def maintain_once(engine: Engine, *, actor: str = "otpki-maintenance", leader: bool = True) -> MaintenanceReport:
    """`leader`: re-sign the CRLs that are due as well (the elected instance's job); every instance refreshes its
    revocation index."""
    published: list[str] = []
    errors: list[str] = []
    ocsp_signers: list[str]
    if leader:
        refresh = engine.authority.refresh_crls(actor=actor)
        published = [f"{c.ca_id}#{c.crl_number}" for c in refresh.published]
        errors = [f"CRL of {ca_id} not refreshed: {why}" for ca_id, why in refresh.failed.items()]
        signers = engine.ocsp_signers.ensure(actor=actor)
        ocsp_signers = [f"{s.issuer_ca_id}#{s.serial}" for s in signers.issued]
        errors += [f"OCSP signer of {ca_id} not issued: {why}" for ca_id, why in signers.failed.items()]
        folded = engine.inventory.fold_tallies()
    else:
        ocsp_signers = []
        folded = 0
    loaded = engine.refresh_revocations()
    return MaintenanceReport(crls_published=published, revocations_loaded=loaded, errors=errors, leader=leader,
                             ocsp_signers_issued=ocsp_signers, tally_rows_folded=folded)


async def run_maintenance(engine: Engine, *, interval_s: float = 60.0, actor: str = "otpki-maintenance",
                          on_report: object = None, lease_s: float = LEASE_S) -> None:
    """Run `maintain_once` every `interval_s` seconds until cancelled, re-signing CRLs only while this instance
    holds the leader lease (asked for every min(interval_s, lease_s / 3) seconds; given up when cancelled, so a
    clean stop hands the work over at once). A failed round (a locked or unreachable database) is logged and
    retried at the next tick."""
    ttl = timedelta(seconds=lease_s)
    tick = min(interval_s, lease_s / 3)
    last_run = -float("inf")
    was_leader = False
    try:
        while True:
            try:
                leader = await run_blocking(engine.leases.acquire, LEADER_MAINTENANCE, ttl=ttl,
                                            actor=actor) is not None
                if leader != was_leader:
                    log.info("maintenance: this instance (%s) %s the leader", engine.instance_id,
                             "is now" if leader else "is no longer")
                # A new leader works at once: its predecessor may have left a CRL due.
                new_leader = leader and not was_leader
                was_leader = leader
                if new_leader or time.monotonic() - last_run >= interval_s:
                    last_run = time.monotonic()
                    report = await run_blocking(maintain_once, engine, actor=actor, leader=leader)
                    for error in report.errors:
                        log.warning("maintenance: %s", error)
                    if callable(on_report):
                        on_report(report)
            except Exception:
                log.exception("maintenance round failed; retrying")
            await asyncio.sleep(tick)
    finally:
        if was_leader:
            with contextlib.suppress(Exception):  # a store that is gone: the lease simply expires
                await asyncio.shield(run_blocking(engine.leases.release, LEADER_MAINTENANCE))
