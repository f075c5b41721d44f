"""Persistence: one interface (`Store`, `StoreTx`), SQLite by default, PostgreSQL beside it later."""

from trustlists.store.base import Store, StoreTx
from trustlists.store.sqlite import SqliteStore

__all__ = ["SqliteStore", "Store", "StoreTx"]
