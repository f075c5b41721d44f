"""The store interface the engine programs against.

A backend provides `transaction()` (a write unit of work: everything inside commits together or not at
all) and `read()`; both yield a `StoreTx`, which carries every query the engine runs. The queries are
written once, in plain SQL with `?` placeholders, in `trustlists.store.sql`; a backend only supplies the
connection, the placeholder style and the translation of its driver's errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Protocol

from trustlists.store.sql import SqlTx as StoreTx


class Store(Protocol):
    def transaction(self) -> AbstractContextManager[StoreTx]: ...

    def read(self) -> AbstractContextManager[StoreTx]: ...

    def close(self) -> None: ...


__all__ = ["Iterator", "Store", "StoreTx"]
