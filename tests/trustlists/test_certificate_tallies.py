"""The overview's counts kept on write (certificate_tallies, migration 0005) equal the GROUP BY over every
certificate, whatever happens: random issuance, revocation, renewal, delivery and clock moves (property-style, a
seeded generator, both backends); after the leader folds the tallies of connections that are gone; after a store
copy, a backup and restore, and a schema upgrade of a store that had certificates before the tallies existed."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from trustlists.engine import Engine
from trustlists.models import CertificateStatus, Owner, RevocationReason
from trustlists.store import SqliteStore, open_store
from trustlists.store.migrations import migrations
from trustlists.store_copy import copy_store
from trustlists.testing import (
    PASSPHRASE,
    Clock,
    PostgresCluster,
    make_csr,
    make_engine,
    recount_certificate_tallies,
    scanned_counts,
    sql,
)

LATEST = migrations("sqlite")[-1].version  # the schema this otpki makes (both backends number alike)

STORE_BACKENDS = ("sqlite", "postgresql")
ROOT = Path(__file__).resolve().parents[2]


def expected_buckets(engine: Engine, edges: list[datetime]) -> list[int]:
    live = [r.not_after for r in engine.inventory.query() if r.revoked_at is None and r.superseded_by is None]
    return [sum(1 for t in live if a <= t < b) for a, b in pairwise(edges)]


def assert_counts_true(engine: Engine) -> None:
    tallied = engine.inventory.counts()
    assert tallied == scanned_counts(engine)
    buckets = engine.inventory.expiry_by_month(12)
    edges = [buckets[0].start, *(b.end for b in buckets)]
    assert [b.certificates for b in buckets] == expected_buckets(engine, edges)


def random_plant(engine: Engine, clock: Clock, owners: list[Owner], rng: random.Random, steps: int) -> None:
    """Random operations, checking the counts after each. Whole seconds on the clock: the store keeps epoch seconds,
    so a chart edge a fraction past a certificate's end would be a question of rounding, not of counting."""
    clock.now = clock.now.replace(microsecond=0)
    for _ in range(steps):
        records = engine.inventory.query()
        live = [r for r in records if r.revoked_at is None and r.superseded_by is None and r.not_after > clock.now]
        roll = rng.random()
        if roll < 0.4 or not live:
            owner = rng.choice(owners)
            uris = [owner.application_uri] if owner.application_uri else None
            engine.authority.issue_from_csr(make_csr(owner.name, uris=uris), owner_id=owner.id, actor="t",
                                            delivered=rng.random() < 0.7)
        elif roll < 0.55:
            engine.authority.revoke(rng.choice(live).serial, reason=RevocationReason.KEY_COMPROMISE, actor="t")
        elif roll < 0.7:
            engine.authority.renew(rng.choice(live).serial, actor="t")
        elif roll < 0.8:
            waiting = [r for r in records if not r.delivered]
            if waiting:
                engine.authority.mark_delivered(rng.choice(waiting).serial, actor="t")
        else:
            # Hours to more than a year on, sometimes to the exact start of a UTC day (where "today" begins).
            clock.now += timedelta(hours=rng.choice([1, 7, 30, 24 * 40, 24 * 200, 24 * 370]))
            if rng.random() < 0.3:
                clock.now = datetime.fromtimestamp(int(clock.now.timestamp()) // 86400 * 86400, UTC)
        assert_counts_true(engine)


def shards(engine: Engine) -> set[int]:
    with engine._ctx.store.read() as tx:
        return {int(r[0]) for r in sql(tx).execute("SELECT DISTINCT shard FROM certificate_tallies").fetchall()}


def live_backends(engine: Engine, pids: set[int]) -> int:
    with engine._ctx.store.read() as tx:
        return sum(1 for (pid,) in sql(tx).execute("SELECT pid FROM pg_stat_activity").fetchall() if pid in pids)


@pytest.fixture
def owners(engine: Engine) -> list[Owner]:
    return [engine.registry.register(group="mqtt-device", name="pump-7", actor="t"),
            engine.registry.register(group="mqtt-device", name="valve-2", site="hall-b", actor="t"),
            engine.registry.register(group="opcua-application", name="scada-1", application_uri="urn:plant:scada-1",
                                     actor="t")]


def test_counts_equal_the_scan_through_random_operations(engine: Engine, clock: Clock, owners: list[Owner]) -> None:
    random_plant(engine, clock, owners, random.Random(14), steps=60)
    states = {c.status for c in engine.inventory.counts()}
    # The run went through every state (else it proved less than it claims).
    assert states == {s.value for s in CertificateStatus}, states


def test_folding_keeps_the_counts(tmp_path: Path, engine: Engine, clock: Clock, owners: list[Owner],
                                  store_url: str | None) -> None:
    random_plant(engine, clock, owners, random.Random(5), steps=15)
    mine = shards(engine)
    # Another instance writes through its own connections, then goes: its rows are left for the leader to fold.
    other = make_engine(tmp_path, clock=clock, config=engine.config, store_url=store_url)
    try:
        random_plant(other, clock, owners, random.Random(6), steps=15)
    finally:
        other.close()
    if store_url is not None:
        # A closed connection's server process ends a moment later: until then its rows are a live writer's.
        theirs = shards(engine) - mine
        assert theirs
        deadline = time.monotonic() + 30
        while live_backends(engine, theirs):
            assert time.monotonic() < deadline, "the other instance's connections stayed"
            time.sleep(0.05)
    with engine._ctx.store.read() as tx:
        before = sql(tx).execute("SELECT COUNT(*) FROM certificate_tallies").fetchone()[0]
    folded = engine.inventory.fold_tallies()
    with engine._ctx.store.read() as tx:
        zero = sql(tx).execute("SELECT COUNT(*) FROM certificate_tallies WHERE shard = 0 AND n = 0").fetchone()[0]
        after = sql(tx).execute("SELECT COUNT(*) FROM certificate_tallies").fetchone()[0]
    assert folded > 0 and after < before and zero == 0
    if store_url is not None:  # only this engine's live connections keep shards of their own
        assert shards(engine) <= mine | {0}
    assert_counts_true(engine)
    random_plant(engine, clock, owners, random.Random(7), steps=5)


def test_an_upgraded_store_counts_the_certificates_it_had(tmp_path: Path, engine: Engine, clock: Clock,
                                                          owners: list[Owner], store_url: str | None) -> None:
    random_plant(engine, clock, owners, random.Random(3), steps=20)
    expected = scanned_counts(engine)
    engine.close()
    # The store as migration 4 left it: certificates, and no tallies.
    store = SqliteStore(tmp_path / "otpki.db") if store_url is None else open_store(store_url)
    with store.transaction() as tx:
        sql(tx).execute("DROP TABLE certificate_tallies")
        sql(tx).execute("DELETE FROM schema_migrations WHERE version >= 5")  # later ones are re-runnable
    assert [m.version for m in store.upgrade()] == list(range(5, LATEST + 1))
    store.close()
    upgraded = make_engine(tmp_path, clock=clock, config=engine.config, store_url=store_url)
    try:
        assert upgraded.inventory.counts() == expected and expected
        assert_counts_true(upgraded)
    finally:
        upgraded.close()


def test_a_copy_to_postgresql_and_a_restore_keep_the_counts(tmp_path: Path, clock: Clock,
                                                            postgres_cluster: PostgresCluster) -> None:
    plant = tmp_path / "plant"
    engine = make_engine(plant, clock=clock)
    engine.hierarchy.initialize(actor="t")
    owners = [engine.registry.register(group="mqtt-device", name=f"dev-{i}", actor="t") for i in range(3)]
    random_plant(engine, clock, owners, random.Random(11), steps=25)
    expected = scanned_counts(engine)
    engine.close()

    url = postgres_cluster.database()
    source, target = SqliteStore(plant / "otpki.db"), open_store(url)
    try:
        copy_store(source, target, source_name="sqlite", target_name=url, actor="migrator")
    finally:
        source.close()
        target.close()
    copied = make_engine(plant, clock=clock, store_url=url)
    try:
        assert copied.inventory.counts() == expected
        assert_counts_true(copied)
    finally:
        copied.close()

    env = {**os.environ, "OTPKI_CA_PASSPHRASE": PASSPHRASE.decode(), "OTPKI_ACTOR": "t"}
    backup, restored = tmp_path / "backup", tmp_path / "restored"
    for args, data_dir in ((("backup", str(backup)), plant), (("restore", str(backup)), restored)):
        done = subprocess.run([sys.executable, "-m", "otpki.cli.main", *args], env={**env, "OTPKI_DATA_DIR":
                              str(data_dir)}, capture_output=True, text=True, timeout=180, check=False, cwd=ROOT)
        assert done.returncode == 0, done.stderr
    back = make_engine(restored, clock=clock)
    try:
        assert back.inventory.counts() == expected
        assert_counts_true(back)
    finally:
        back.close()


def test_the_day_of_now_and_of_each_chart_edge_is_counted_exactly(engine: Engine, clock: Clock,
                                                                   owners: list[Owner]) -> None:
    """A certificate ending at 10:00 UTC: an hour before or after, the same day of the tallies says "expired" or not,
    and a chart edge at 11:00 that day puts it in the bucket before the edge (whole days would put it after)."""
    day_start = datetime.fromtimestamp((int(clock.now.timestamp()) // 86400 + 1) * 86400, UTC)  # after the CAs
    clock.now = day_start + timedelta(hours=10)
    issued = engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=owners[0].id, actor="t").record
    ends = issued.not_after
    assert ends.hour == 10 and ends.minute == 0, ends

    def count(status: str) -> int:
        return sum(c.certificates for c in engine.inventory.counts() if c.status == status)

    clock.now = ends - timedelta(hours=1)
    assert (count("active"), count("expired")) == (1, 0)
    assert_counts_true(engine)
    clock.now = ends + timedelta(hours=1)
    assert (count("active"), count("expired")) == (0, 1)
    assert_counts_true(engine)
    clock.now = ends + timedelta(hours=1) - timedelta(days=90)  # the edge of the third bucket: 11:00 that day
    assert [b.certificates for b in engine.inventory.expiry_by_month(12)][1:4] == [0, 1, 0]
    assert_counts_true(engine)


def test_two_writers_on_postgresql_never_wait_on_one_tally_row(postgres_cluster: PostgresCluster) -> None:
    """Two connections count a certificate of the same group, state and day while the first one's transaction is
    still open: the second does not wait for it (each connection has its own row), and the read sums both."""
    url = postgres_cluster.database()
    first, second = open_store(url), open_store(url)
    key = ("mqtt-device", "", "active", 20_000)
    outcome: list[object] = []
    try:
        with first.transaction() as tx:
            writer = sql(tx)
            writer._add_tallies([(key, 1)], writer._TALLY_SHARD)

            def count_too() -> None:
                try:
                    with second.transaction() as tx2:
                        other = sql(tx2)
                        other._add_tallies([(key, 1)], other._TALLY_SHARD)
                    outcome.append("committed")
                except Exception as exc:  # a lock wait that timed out: the claim is false
                    outcome.append(exc)

            thread = threading.Thread(target=count_too)
            thread.start()
            thread.join(timeout=30)  # the first transaction stays open all this time
            assert outcome == ["committed"], outcome
        with first.read() as tx:
            rows = sql(tx).execute("SELECT shard, n FROM certificate_tallies WHERE day = 20000").fetchall()
        assert len(rows) == 2 and sum(n for _, n in rows) == 2
    finally:
        first.close()
        second.close()


def test_a_recount_from_the_certificates_gives_the_same_counts(engine: Engine, clock: Clock,
                                                               owners: list[Owner]) -> None:
    random_plant(engine, clock, owners, random.Random(9), steps=15)
    kept = engine.inventory.counts()
    recount_certificate_tallies(engine)
    assert engine.inventory.counts() == kept
    assert_counts_true(engine)


def test_the_leaders_maintenance_folds_the_tallies(engine: Engine, clock: Clock, owners: list[Owner],
                                                   store_url: str | None) -> None:
    from trustlists.maintenance import maintain_once

    random_plant(engine, clock, owners, random.Random(4), steps=15)  # revocations and renewals leave empty rows
    assert maintain_once(engine, leader=False).tally_rows_folded == 0
    folded = maintain_once(engine, leader=True).tally_rows_folded
    # SQLite: the empty rows go. PostgreSQL: they are this engine's live connections' rows, left to them.
    assert folded > 0 if store_url is None else folded == 0
    assert maintain_once(engine, leader=True).tally_rows_folded == 0
    assert_counts_true(engine)
