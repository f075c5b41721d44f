"""The inventory: every certificate ever issued, shipped or not, and the questions operators ask of it."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import pairwise

from pydantic import BaseModel

from trustlists.context import EngineContext
from trustlists.models import CertificateRecord, CertificateStatus, ExpiringCertificate, ListedCertificate
from trustlists.store.rows import CertificateCount

__all__ = ["CertificateCount", "CertificatePage", "ExpiringCertificate", "ExpiryBucket", "Inventory",
           "ListedCertificate"]

MAX_PAGE = 1000
COUNT_CAP = 10_000


class CertificatePage(BaseModel):
    """One page of the inventory: `total` lines match the filters (at least that many when `total_capped`: counting
    stops at COUNT_CAP, as a million rows take a second to count), `lines` are those from `offset` on."""

    total: int
    total_capped: bool
    offset: int
    limit: int
    lines: list[ListedCertificate]


class ExpiryBucket(BaseModel):
    """Live certificates whose validity ends in [start, end): one bar of the expiry chart."""

    start: datetime
    end: datetime
    certificates: int




class Inventory:
    def __init__(self, ctx: EngineContext) -> None:
        self._ctx = ctx

    def get(self, serial: str) -> CertificateRecord:
        serial = serial.lower().removeprefix("0x").replace(":", "").lstrip("0")
        with self._ctx.store.read() as tx:
            return tx.get_certificate(serial)

    def query(self, *, status: CertificateStatus | None = None, group: str | None = None,
              site: str | None = None, owner_id: str | None = None, expiring_within: timedelta | None = None,
              limit: int | None = None) -> list[CertificateRecord]:
        now = self._ctx.clock()
        if group is not None:
            self._ctx.config.group(group)
        with self._ctx.store.read() as tx:
            return tx.query_certificates(
                now=now, status=status, group=group, site=site, owner_id=owner_id,
                expiring_before=(now + expiring_within) if expiring_within is not None else None, limit=limit)

    def listing(self, *, status: CertificateStatus | None = None, group: str | None = None,
                site: str | None = None, owner_id: str | None = None, expiring_within: timedelta | None = None,
                limit: int | None = None) -> list[ListedCertificate]:
        """What `query` returns (same filters, same order), as lines with their status at this moment."""
        now = self._ctx.clock()
        if group is not None:
            self._ctx.config.group(group)
        with self._ctx.store.read() as tx:
            return tx.certificate_lines(
                now=now, status=status, group=group, site=site, owner_id=owner_id,
                expiring_before=(now + expiring_within) if expiring_within is not None else None, limit=limit)

    def page(self, *, status: CertificateStatus | None = None, group: str | None = None, site: str | None = None,
             owner_id: str | None = None, expiring_within: timedelta | None = None, offset: int = 0,
             limit: int = 50) -> CertificatePage:
        """A page of `listing` (same filters, same order) and how many lines match in all (one read: both agree)."""
        if not 1 <= limit <= MAX_PAGE or offset < 0:
            from trustlists.errors import InvalidInput

            raise InvalidInput(f"a page holds 1 to {MAX_PAGE} lines from offset 0 on", reason="page_invalid")
        now = self._ctx.clock()
        if group is not None:
            self._ctx.config.group(group)
        expiring_before = (now + expiring_within) if expiring_within is not None else None
        with self._ctx.store.read() as tx:
            total = tx.count_certificate_lines(now=now, status=status, group=group, site=site, owner_id=owner_id,
                                               expiring_before=expiring_before, cap=offset + limit + COUNT_CAP)
            lines = tx.certificate_lines(now=now, status=status, group=group, site=site, owner_id=owner_id,
                                         expiring_before=expiring_before, limit=limit, offset=offset)
        return CertificatePage(total=total, total_capped=total == offset + limit + COUNT_CAP, offset=offset,
                               limit=limit, lines=lines)

    def counts(self) -> list[CertificateCount]:
        """Certificates per group, site and status now (the plant overview's table)."""
        with self._ctx.store.read() as tx:
            return tx.certificate_counts(self._ctx.clock())

    def fold_tallies(self) -> int:
        """Housekeeping of the counts behind `counts` and `expiry_by_month` (the leader's maintenance): the tally
        rows of writers that are gone merged, empty ones dropped; how many rows went. Derived data, not audited."""
        with self._ctx.store.transaction() as tx:
            return tx.fold_certificate_tallies()

    def expiry_by_month(self, months: int = 12) -> list[ExpiryBucket]:
        """Live certificates ending in each of the next `months` 30-day periods, from now."""
        now = self._ctx.clock()
        edges = [now + timedelta(days=30 * i) for i in range(months + 1)]
        with self._ctx.store.read() as tx:
            counts = tx.count_live_ending_each(edges)
        return [ExpiryBucket(start=a, end=b, certificates=n) for (a, b), n in zip(pairwise(edges), counts, strict=True)]

    def expiring(self, within: timedelta, *, group: str | None = None) -> list[ExpiringCertificate]:
        """Live (not revoked, not superseded) certificates whose validity ends within `within`, soonest first."""
        now = self._ctx.clock()
        if group is not None:
            self._ctx.config.group(group)
        with self._ctx.store.read() as tx:
            return tx.expiring_rows(now, now + within, group)

    def by_fingerprint(self, sha256_hex: str) -> CertificateRecord | None:
        """The inventory record of a presented certificate (SHA-256 of its DER), if the engine issued it."""
        with self._ctx.store.read() as tx:
            return tx.find_certificate_by_fingerprint(sha256_hex.lower())

    def count(self) -> int:
        with self._ctx.store.read() as tx:
            return tx.count_certificates()
