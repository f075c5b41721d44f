"""The store's schema as the shell shows and upgrades it (`otpki db status`, `otpki db upgrade`).

An upgrade is a change of the engine's state like any other: its audit record is written in the transaction of
the last migration it applies. Creating the schema of an empty store is not (the store opens that way).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from trustlists import audit
from trustlists.clock import utcnow
from trustlists.store.base import Store, StoreWriter
from trustlists.store.migrations import Migration, SchemaStatus

__all__ = ["SchemaStatus", "SchemaUpgrade", "status", "upgrade"]


class SchemaUpgrade(BaseModel):
    before: SchemaStatus
    applied: list[str]  # "0002_name", in the order applied
    after: SchemaStatus


def status(store: Store) -> SchemaStatus:
    return store.schema_status()


def upgrade(store: Store, *, actor: str, at: datetime | None = None) -> SchemaUpgrade:
    """Bring the store to the schema this otpki knows. SchemaMismatch if it is newer already."""
    before = store.schema_status()
    before.check_not_newer()

    def record(tx: StoreWriter, applied: list[Migration]) -> None:
        if before.empty:
            return
        audit.append(tx, actor=actor, action="store.upgrade", subject=before.backend, at=at or utcnow(),
                     details={"from": before.version, "to": applied[-1].version,
                              "applied": [f"{m.version:04d}_{m.name}" for m in applied]})

    applied = store.upgrade(record)
    return SchemaUpgrade(before=before, applied=[f"{m.version:04d}_{m.name}" for m in applied],
                         after=store.schema_status())
