"""The request guard: one replay memory and one rate limit per subject for every engine on a store, kept across
restarts, with expired rows dropped."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.mqtt_broker_auth.conftest import mqtt_config
from trustlists.engine import Engine
from trustlists.errors import InvalidInput
from trustlists.request_guard import FORGET_GRACE_S, RateLimit
from trustlists.testing import Clock, make_engine

SCOPE = "mqtt-enrollment:mqtt-device"
LIMIT = RateLimit(burst=3, refill_per_s=0.5)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engines(tmp_path: Path, clock: Clock) -> Iterator[tuple[Engine, Engine]]:
    """Two engines on one SQLite file: two services, or two processes."""
    first = make_engine(tmp_path / "pki", clock=clock, config=mqtt_config())
    second = make_engine(tmp_path / "pki", clock=clock, config=mqtt_config())
    yield first, second
    first.close()
    second.close()


def admit(engine: Engine, clock: Clock, request_id: str, subject: str = "pump-1", limit: RateLimit = LIMIT) -> str:
    return engine.request_guard.admit(SCOPE, subject, request_id, expires_at=clock.now + timedelta(minutes=10),
                                      limit=limit)


def rows(engine: Engine, table: str) -> int:
    with engine._ctx.store.read() as tx:
        return int(tx.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def test_a_request_admitted_by_one_engine_is_a_replay_for_the_other(engines: tuple[Engine, Engine],
                                                                    clock: Clock) -> None:
    first, second = engines
    request = str(uuid.uuid4())
    assert admit(first, clock, request) == "ok"
    assert admit(second, clock, request) == "replay"
    assert admit(first, clock, request) == "replay"
    assert admit(second, clock, request, subject="pump-2") == "ok"  # ids are per subject
    assert admit(second, clock, str(uuid.uuid4())) == "ok"


def test_replay_memory_survives_a_restart_and_forgets_after_the_window(tmp_path: Path, clock: Clock) -> None:
    request = str(uuid.uuid4())
    engine = make_engine(tmp_path / "pki", clock=clock, config=mqtt_config())
    assert admit(engine, clock, request) == "ok"
    engine.close()
    restarted = make_engine(tmp_path / "pki", clock=clock, config=mqtt_config())
    try:
        assert admit(restarted, clock, request) == "replay"
        # Past expires_at, and past the grace that covers other hosts' clocks: the row goes with the next admission.
        clock.now += timedelta(minutes=11, seconds=FORGET_GRACE_S)
        assert admit(restarted, clock, str(uuid.uuid4()), subject="pump-9") == "ok"
        assert rows(restarted, "seen_requests") == 1
        assert rows(restarted, "rate_buckets") == 1  # pump-1's bucket was full again: dropped too
    finally:
        restarted.close()


def test_rate_limit_is_shared_and_refills(engines: tuple[Engine, Engine], clock: Clock) -> None:
    first, second = engines
    assert [admit(e, clock, str(uuid.uuid4())) for e in (first, second, first)] == ["ok"] * 3  # the burst
    limited = str(uuid.uuid4())
    assert admit(second, clock, limited) == "rate_limited"
    assert admit(first, clock, str(uuid.uuid4())) == "rate_limited"
    assert admit(first, clock, str(uuid.uuid4()), subject="pump-2") == "ok"  # other devices keep their budget
    clock.now += timedelta(seconds=2)  # 0.5/s: one request earned back
    assert admit(second, clock, limited) == "ok"  # a rate-limited request was not remembered: its retry counts
    assert admit(first, clock, str(uuid.uuid4())) == "rate_limited"
    clock.now -= timedelta(hours=1)  # a clock stepped back earns nothing
    assert admit(first, clock, str(uuid.uuid4())) == "rate_limited"


def test_a_rate_limited_request_writes_nothing(engines: tuple[Engine, Engine], clock: Clock) -> None:
    first, _ = engines
    limit = RateLimit(burst=1, refill_per_s=0.001)
    assert admit(first, clock, str(uuid.uuid4()), limit=limit) == "ok"
    with first._ctx.store.read() as tx:
        before = tx.execute("SELECT tokens, stamp_us FROM rate_buckets").fetchall()
    for _ in range(5):
        assert admit(first, clock, str(uuid.uuid4()), limit=limit) == "rate_limited"
    with first._ctx.store.read() as tx:
        assert tx.execute("SELECT tokens, stamp_us FROM rate_buckets").fetchall() == before
    assert rows(first, "seen_requests") == 1


def test_empty_keys_are_refused(engines: tuple[Engine, Engine], clock: Clock) -> None:
    with pytest.raises(InvalidInput):
        engines[0].request_guard.admit(SCOPE, "", "x", expires_at=clock.now, limit=LIMIT)


def test_an_instance_whose_clock_is_ahead_does_not_forget_what_another_still_accepts(tmp_path: Path) -> None:
    """Two instances on one store, on hosts whose clocks are half an hour apart: the one ahead dropping expired rows
    (by its clock) must not drop a request id that the other (by its clock) would still accept a replay of."""
    behind, ahead = Clock(), Clock()
    ahead.now = behind.now + timedelta(minutes=30)
    first = make_engine(tmp_path / "pki", clock=behind, config=mqtt_config())
    second = make_engine(tmp_path / "pki", clock=ahead, config=mqtt_config())
    try:
        request = str(uuid.uuid4())
        assert admit(first, behind, request) == "ok"  # remembered until behind.now + 10 minutes
        assert admit(second, ahead, str(uuid.uuid4()), subject="pump-2") == "ok"  # drops what it thinks expired
        assert admit(first, behind, request) == "replay"
    finally:
        first.close()
        second.close()


def test_peek_answers_like_admit_and_records_nothing(engines: tuple[Engine, Engine], clock: Clock) -> None:
    first, second = engines
    request = str(uuid.uuid4())
    assert first.request_guard.peek(SCOPE, "pump-1", request, limit=LIMIT) == "ok"
    assert admit(second, clock, request) == "ok"  # peeking took nothing: the request is still new
    assert first.request_guard.peek(SCOPE, "pump-1", request, limit=LIMIT) == "replay"
    for _ in range(LIMIT.burst - 1):
        assert admit(first, clock, str(uuid.uuid4())) == "ok"
    assert first.request_guard.peek(SCOPE, "pump-1", str(uuid.uuid4()), limit=LIMIT) == "rate_limited"


def test_admit_in_is_undone_with_the_callers_transaction(engines: tuple[Engine, Engine], clock: Clock) -> None:
    first, _ = engines
    request = str(uuid.uuid4())
    with pytest.raises(RuntimeError), first._ctx.store.transaction() as tx:
        assert first.request_guard.admit_in(tx, SCOPE, "pump-1", request,
                                            expires_at=clock.now + timedelta(minutes=10), limit=LIMIT) == "ok"
        raise RuntimeError("what the request led to failed")
    assert admit(first, clock, request) == "ok"  # rolled back with it: not a replay
    with first._ctx.store.transaction() as tx:
        assert first.request_guard.admit_in(tx, SCOPE, "pump-1", request,
                                            expires_at=clock.now + timedelta(minutes=10), limit=LIMIT) == "replay"
