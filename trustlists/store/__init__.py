"""Persistence: one interface (`Store`, `StoreReader`, `StoreWriter`), SQLite by default, PostgreSQL beside it."""

from __future__ import annotations

from pathlib import Path

from trustlists.errors import InvalidInput
from trustlists.store.base import Store, StoreReader, StoreWriter
from trustlists.store.sqlite import SqliteStore

__all__ = ["SqliteStore", "Store", "StoreReader", "StoreWriter", "open_store"]

SQLITE_PREFIX = "sqlite:///"
POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def open_store(url: str, *, busy_timeout_s: float = 5.0, check_schema: bool = True) -> Store:
    """The store a URL names: `sqlite:///path/to/otpki.db` or `postgresql://user[:password]@host[:port]/db`.

    `check_schema`: refuse (SchemaMismatch) a store whose schema is not this otpki's, and create the schema in an
    empty one; off only to show or upgrade the schema.
    """
    if url.startswith(SQLITE_PREFIX):
        path = url.removeprefix(SQLITE_PREFIX)
        if not path:
            raise InvalidInput(f"store URL {url!r} names no file: use sqlite:///path/to/otpki.db")
        return SqliteStore(Path(path), busy_timeout_s=busy_timeout_s, check_schema=check_schema)
    if url.startswith(POSTGRES_PREFIXES):
        from trustlists.store.postgres import PostgresStore  # psycopg is loaded for PostgreSQL only

        return PostgresStore(url, busy_timeout_s=busy_timeout_s, check_schema=check_schema)
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise InvalidInput(f"unknown store URL scheme {scheme!r}: use sqlite:///path or postgresql://user@host:port/db",
                       reason="store_url_invalid")
