"""Fixtures every test package may use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from trustlists.testing import PostgresCluster


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the whole test session, started on first use."""
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()
