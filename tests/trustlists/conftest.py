from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from trustlists.engine import Engine
from trustlists.models import KeyType, Owner
from trustlists.policy import load_default_config
from trustlists.testing import Clock, initialized_engine


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(tmp_path: Path, clock: Clock) -> Iterator[Engine]:
    # An RSA-2048 root keeps each test's key ceremony short; test_hierarchy covers the default RSA-4096 root.
    config = load_default_config()
    config = config.model_copy(update={"root": config.root.model_copy(update={"key_type": KeyType.RSA2048})})
    eng = initialized_engine(tmp_path, clock=clock, config=config, actor="tester")
    yield eng
    eng.close()


@pytest.fixture
def scada(engine: Engine) -> Owner:
    return engine.registry.register(group="opcua-application", name="scada-1", application_uri="urn:plant:scada-1",
                                    dns_names=["scada-1.plant"], ip_addresses=["10.0.0.5"], actor="tester")


@pytest.fixture
def device(engine: Engine) -> Owner:
    return engine.registry.register(group="mqtt-device", name="pump-7", actor="tester")
