from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from trustlists.engine import Engine
from trustlists.models import KeyType, Owner
from trustlists.policy import load_default_config
from trustlists.testing import Clock, PostgresCluster, initialized_engine, make_engine


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test module that sets STORE_BACKENDS = ("sqlite", "postgresql") runs each of its tests on both stores (its
    `engine`, `store_url`); the others on SQLite."""
    if "store_backend" in metafunc.fixturenames:
        backends = getattr(metafunc.module, "STORE_BACKENDS", ("sqlite",))
        metafunc.parametrize("store_backend", backends, indirect=True)


@pytest.fixture
def store_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(store_backend: str, request: pytest.FixtureRequest) -> str | None:
    """Where the test's engine keeps its store: None for SQLite (<tmp_path>/otpki.db, beside the keys), else the URL
    of a fresh PostgreSQL database. Another engine on the same store (another process) opens it with
    `make_engine(tmp_path, store_url=store_url)`."""
    if store_backend == "sqlite":
        return None
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return cluster.database()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(tmp_path: Path, clock: Clock, store_url: str | None) -> Iterator[Engine]:
    # An RSA-2048 root keeps each test's key ceremony short; test_hierarchy covers the default RSA-4096 root.
    config = load_default_config()
    config = config.model_copy(update={"root": config.root.model_copy(update={"key_type": KeyType.RSA2048})})
    if store_url is None:  # SQLite: a copy of a template initialised once per process
        eng = initialized_engine(tmp_path, clock=clock, config=config, actor="tester")
    else:
        eng = make_engine(tmp_path, clock=clock, config=config, store_url=store_url)
        eng.hierarchy.initialize(actor="tester")
    yield eng
    eng.close()


@pytest.fixture
def scada(engine: Engine) -> Owner:
    return engine.registry.register(group="opcua-application", name="scada-1", application_uri="urn:plant:scada-1",
                                    dns_names=["scada-1.plant"], ip_addresses=["10.0.0.5"], actor="tester")


@pytest.fixture
def device(engine: Engine) -> Owner:
    return engine.registry.register(group="mqtt-device", name="pump-7", actor="tester")
