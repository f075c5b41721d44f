"""The inventory: every certificate ever issued, shipped or not, and the questions operators ask of it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from trustlists.clock import from_epoch
from trustlists.context import EngineContext
from trustlists.models import CertificateRecord, CertificateStatus, IssuanceKind


class ExpiringCertificate(NamedTuple):
    """One row of the "what expires soon" report.

    A tuple, not a pydantic model, on purpose: the report covers tens of thousands of rows on a large
    plant and is built straight from the covering index (validating each row would cost 4 µs, 100 ms for
    26k rows). The data comes from the engine's own store, so there is nothing to validate.
    """

    serial: str
    subject: str
    group: str
    site: str | None
    owner_id: str | None
    not_after_epoch: int
    delivered: int

    @property
    def not_after(self) -> datetime:
        return from_epoch(self.not_after_epoch)


class ListedCertificate(NamedTuple):
    """One line of the inventory as `otpki certs list` shows it (`Inventory.listing`).

    A tuple, not a CertificateRecord, like ExpiringCertificate and for its reason: the listing is the whole
    inventory, and building 10k validated records took as long as the rest of the command.
    """

    serial: str
    subject: str
    group: str
    site: str | None
    owner_id: str | None
    not_after_epoch: int
    status: CertificateStatus
    issuance: IssuanceKind

    @property
    def not_after(self) -> datetime:
        return from_epoch(self.not_after_epoch)


_STATUSES = {s.value: s for s in CertificateStatus}
_ISSUANCES = {k.value: k for k in IssuanceKind}


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
            rows = tx.certificate_lines(
                now=now, status=status, group=group, site=site, owner_id=owner_id,
                expiring_before=(now + expiring_within) if expiring_within is not None else None, limit=limit)
        return [ListedCertificate(serial, subject, grp, site_, owner, not_after, _STATUSES[st], _ISSUANCES[kind])
                for serial, subject, grp, site_, owner, not_after, st, kind in rows]

    def expiring(self, within: timedelta, *, group: str | None = None) -> list[ExpiringCertificate]:
        """Live (not revoked, not superseded) certificates whose validity ends within `within`, soonest first."""
        now = self._ctx.clock()
        if group is not None:
            self._ctx.config.group(group)
        with self._ctx.store.read() as tx:
            return list(map(ExpiringCertificate._make, tx.expiring_rows(now, now + within, group)))

    def by_fingerprint(self, sha256_hex: str) -> CertificateRecord | None:
        """The inventory record of a presented certificate (SHA-256 of its DER), if the engine issued it."""
        with self._ctx.store.read() as tx:
            return tx.find_certificate_by_fingerprint(sha256_hex.lower())

    def count(self) -> int:
        with self._ctx.store.read() as tx:
            return tx.count_certificates()
