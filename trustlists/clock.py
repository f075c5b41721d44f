"""Time helpers: the engine works in aware UTC datetimes and stores integer epoch seconds."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_epoch(value: datetime) -> int:
    return int(value.timestamp())


def from_epoch(value: int) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def as_utc(value: datetime) -> datetime:
    """cryptography returns naive UTC from the old accessors; normalise everything to aware UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
