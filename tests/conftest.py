"""Fixtures every test package may use, and the order the test files start in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from trustlists.testing import PostgresCluster


def pytest_configure(config: pytest.Config) -> None:
    # Each test process builds asyncua's standard address space once and hands every later server a copy: ~0.4 s
    # instead of ~1.1 s of CPU per server, and the suite starts hundreds (GDSes, PLC simulators, push targets).
    # opcua_gds/_asyncua_compat.py section 15; its contract tests are in tests/opcua_gds/test_asyncua_compat.py.
    from opcua_gds._asyncua_compat import reuse_standard_address_space

    reuse_standard_address_space()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the whole test session, started on first use."""
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


# The files that take longest (wall time, longest first: they wait on servers, subprocesses, a browser), started
# before all others. scripts/test.sh runs pytest-xdist with `--dist loadfile`, which hands out whole files as workers
# free up; a long file handed out late ends the run alone while the other workers idle, and xdist's own order (most
# tests first, unless --no-loadscope-reorder) hands out one-test files such as the benchmark smoke run last.
# Measured with `--durations` / per-file sums of a full run; test_schedule.py checks that each path still exists.
START_FIRST = (
    "tests/otpki/test_backup_restore.py",
    "tests/otpki/test_demo_postgresql.py",
    "tests/otpki/test_backup_restore_races.py",
    "tests/otpki/web/test_browser.py",
    "tests/otpki/test_cli_push.py",
    "tests/opcua_gds/push/test_push_server_identity.py",
    "tests/test_bench_smoke.py",
    "tests/otpki/test_demo_mosquitto.py",
    "tests/opcua_gds/gds/test_directory.py",
    "tests/otpki/test_cli_batch.py",
    "tests/opcua_gds/gds/test_pull_ecc.py",
    "tests/otpki/test_demo.py",
    "tests/interop/test_node_opcua_gds.py",
    "tests/opcua_gds/push/target/test_push_target_ecc.py",
    "tests/otpki/test_cli_postgres.py",
    "tests/interop/test_node_opcua_push.py",
    "tests/test_readme.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """START_FIRST's files first, in its order; every other test as collected (the sort is stable)."""
    rank = {path: n for n, path in enumerate(START_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
