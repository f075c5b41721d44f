"""Persistence: one interface (`Store`, `StoreReader`, `StoreWriter`), SQLite by default, PostgreSQL beside it."""

from trustlists.store.base import Store, StoreReader, StoreWriter
from trustlists.store.sqlite import SqliteStore

__all__ = ["SqliteStore", "Store", "StoreReader", "StoreWriter"]
