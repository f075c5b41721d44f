"""The overview's counts from the certificate tallies (table certificate_tallies, migration 0005).

The store keeps, in the transaction of every certificate write, how many certificates each (group, site, stored
state, expiry day) holds. What depends on the clock is derived when read: a certificate is expired when its
not_after is before `now`, so every day before today's counts as expired (unless revoked), every day after as its
stored state, and today itself is answered exactly from the certificates of that one day (certificates_expiry
index). Pure functions here; the SQL is in trustlists/store/sql.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from itertools import pairwise

from trustlists.clock import to_epoch
from trustlists.models import CertificateRecord, CertificateStatus
from trustlists.store.rows import CertificateCount

DAY_S = 86400
# The states a tally is kept in: what is stored, before the clock says "expired".
STORED_STATES = (CertificateStatus.REVOKED, CertificateStatus.SUPERSEDED, CertificateStatus.NOT_DELIVERED,
                 CertificateStatus.ACTIVE)
LIVE_STATES = (CertificateStatus.NOT_DELIVERED, CertificateStatus.ACTIVE)  # not revoked, not superseded

TallyKey = tuple[str, str, str, int]  # grp, site ('' for none), stored state, day


def day_of(epoch_s: int) -> int:
    """The UTC day of an epoch second, rounded down (as the SQL of the tallies computes it)."""
    return epoch_s // DAY_S


def stored_state(revoked: bool, superseded: bool, delivered: bool) -> CertificateStatus:
    if revoked:
        return CertificateStatus.REVOKED
    if superseded:
        return CertificateStatus.SUPERSEDED
    return CertificateStatus.ACTIVE if delivered else CertificateStatus.NOT_DELIVERED


def key_of(rec: CertificateRecord) -> TallyKey:
    state = stored_state(rec.revoked_at is not None, rec.superseded_by is not None, rec.delivered)
    return rec.group, rec.site or "", state.value, day_of(to_epoch(rec.not_after))


def merge_counts(tallied: Iterable[tuple[str, str, str, bool, int]],
                 today: Iterable[tuple[str, str | None, str, int]]) -> list[CertificateCount]:
    """Counts per (group, site, status): `tallied` rows (grp, site, stored state, before today, n) of every day
    but today, and `today` the exact counts (grp, site, status at now, n) of today's certificates."""
    totals: dict[tuple[str, str | None, str], int] = {}
    for grp, site, state, past, n in tallied:
        status = state if not past or state == CertificateStatus.REVOKED.value else CertificateStatus.EXPIRED.value
        key = (grp, site or None, status)
        totals[key] = totals.get(key, 0) + int(n)
    for grp, site_, status, n in today:
        key = (grp, site_ or None, status)
        totals[key] = totals.get(key, 0) + int(n)
    return [CertificateCount(grp, site, status, n)
            for (grp, site, status), n in sorted(totals.items(), key=lambda kv: (kv[0][0], kv[0][1] is not None,
                                                                                 kv[0][1] or "", kv[0][2]))
            if n]


def bucket_counts(edges: Sequence[datetime], live_per_day: dict[int, int], partial: Sequence[int]) -> list[int]:
    """Live certificates ending in each [edges[i], edges[i+1]): `live_per_day` the tallied live certificates per day
    from the first edge's day to the last's, `partial[i]` the exact count from the start of edges[i]'s day to
    edges[i]."""
    days = [day_of(to_epoch(e)) for e in edges]
    before: list[int] = []  # live certificates ending from the first edge's day start to each edge
    running, day = 0, days[0]
    for edge_day, part in zip(days, partial, strict=True):
        while day < edge_day:
            running += live_per_day.get(day, 0)
            day += 1
        before.append(running + part)
    return [b - a for a, b in pairwise(before)]
