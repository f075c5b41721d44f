"""The inventory: every certificate ever issued, shipped or not, and the questions operators ask of it."""

from __future__ import annotations

from datetime import timedelta

from trustlists.context import EngineContext
from trustlists.models import CertificateRecord, CertificateStatus, ExpiringCertificate, ListedCertificate

__all__ = ["ExpiringCertificate", "Inventory", "ListedCertificate"]




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
