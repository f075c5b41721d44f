"""Versioned schema migrations, one numbered SQL file per step and backend (`sqlite/`, `postgresql/`).

A store records each migration it applied in `schema_migrations` (version, name, when), in the transaction
that applied it. The engine opens a store only at the exact version it knows (`LATEST`): an older schema is
upgraded by `otpki db upgrade` (never behind the operator's back: another instance of the older release may still
be running on it), a newer one needs a newer otpki. The one exception is an empty database, which gets every
migration at once: that is how a store is created.

Data directories of otpki 0.1.0, before migrations existed, hold the schema of migration 1 without the table;
they count as version 0 with data, and migration 1 (IF NOT EXISTS throughout) adopts them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

from pydantic import BaseModel

from trustlists.errors import SchemaMismatch

Dialect = Literal["sqlite", "postgresql"]
UPGRADE_COMMAND = "otpki db upgrade"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


@cache
def migrations(dialect: Dialect) -> tuple[Migration, ...]:
    """The backend's migrations in order; their numbers run 1, 2, 3... without a gap."""
    found = []
    for entry in resources.files(__name__).joinpath(dialect).iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"the {dialect} migrations are not numbered 1..{len(found)}: {[m.version for m in found]}")
    return tuple(found)


def latest(dialect: Dialect) -> int:
    return len(migrations(dialect))


class SchemaStatus(BaseModel):
    """Where a store's schema stands against what this otpki knows."""

    backend: Dialect
    version: int  # the last migration applied; 0 for an empty store or one from before migrations
    latest: int  # the last migration this otpki knows
    empty: bool  # nothing in it yet: opening it creates the schema
    pending: list[str]  # "0002_name" of every migration still to apply

    @property
    def current(self) -> bool:
        return self.version == self.latest

    def check_not_newer(self, where: str = "") -> None:
        """Raise SchemaMismatch if the store was upgraded by a newer otpki."""
        if self.version > self.latest:
            at = f" at {where}" if where else ""
            raise SchemaMismatch(
                f"the store{at} has schema version {self.version}, newer than this otpki knows "
                f"({self.latest}): run a newer otpki on it", reason="schema_too_new")

    def check(self, where: str) -> None:
        """Raise SchemaMismatch unless the engine can work on this schema as it is."""
        self.check_not_newer(where)
        if self.version < self.latest and not self.empty:
            raise SchemaMismatch(
                f"the store at {where} has schema version {self.version}, older than this otpki needs "
                f"({self.latest}): stop the instances of the older otpki on it, back it up, then run "
                f"`{UPGRADE_COMMAND}`", reason="schema_outdated")


def status(dialect: Dialect, version: int, *, empty: bool) -> SchemaStatus:
    return SchemaStatus(backend=dialect, version=version, latest=latest(dialect), empty=empty,
                        pending=[f"{m.version:04d}_{m.name}" for m in migrations(dialect) if m.version > version])


__all__ = ["UPGRADE_COMMAND", "Dialect", "Migration", "SchemaStatus", "latest", "migrations", "status"]
