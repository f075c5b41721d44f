"""Shared plumbing for the benchmarks: argument parsing, timing, a throw-away engine, JSON output.

Every benchmark measures the engine and its baseline in the same process and run (the machines are noisy,
so figures from another run are not comparable), prints one JSON object and exits 0 whether or not the
target is met; `meets_target` says which.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cryptography

from trustlists import testing
from trustlists.engine import Engine
from trustlists.models import KeyType
from trustlists.policy import PkiConfig, load_default_config
from trustlists.serials import random_serial, serial_hex

ACTOR = "bench"
SPREAD_S = 3 * 365 * 86400
DUMMY_DER = b"\x30\x1e" + b"\x00" * 30  # 32 bytes
_INSERT = (f"INSERT INTO certificates ({testing.CERTIFICATE_COLUMNS}, der) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None
               ) -> argparse.Namespace:
    """The options every benchmark has; `extra` adds a benchmark's own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: a smoke run that checks the benchmark works (< 20 s)")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite",
                        help="the engine's store (where a benchmark supports both): SQLite in a temporary "
                             "directory, or a database of a throwaway PostgreSQL cluster")
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def config_with(group: str, ca_key_type: KeyType | None = None, *, only: bool = True) -> PkiConfig:
    """The default config, optionally with another issuing-CA key type for `group`.

    only=True drops the other groups so that `initialize` does not make CA keys nobody uses.
    """
    config = load_default_config()
    policy = config.group(group)
    if ca_key_type is not None:
        policy = policy.model_copy(update={"ca_key_type": ca_key_type})
    groups = {group: policy} if only else {**config.groups, group: policy}
    return config.model_copy(update={"groups": groups})


def make_engine(directory: Path, config: PkiConfig) -> Engine:
    """An initialized engine on `directory` (trustlists.testing's, the one the tests use)."""
    engine = testing.make_engine(directory, config=config)
    engine.hierarchy.initialize(actor=ACTOR)
    return engine


def certificate_rows(n: int, cas: dict[str, str], owners: dict[str, list[str]], now_s: int, rng: random.Random,
                     counts: dict[str, int], der: bytes = DUMMY_DER) -> Iterator[tuple[Any, ...]]:
    """n realistic certificate rows (the columns of `_INSERT`): not_after uniform over the next ~3 years, ~3%
    revoked, ~2% superseded, ~1% not delivered, the three groups of `cas` (group -> issuing CA id) 60/30/10,
    owners drawn from `owners` (group -> owner ids); `counts` gets the mix."""
    groups = [("mqtt-device", 0.6, "ec-p256", 365), ("opcua-application", 0.3, "rsa2048", 730),
              ("opcua-user", 0.1, "rsa2048", 365)]
    weights = [g[1] for g in groups]
    counts.update({"revoked": 0, "superseded": 0, "not_delivered": 0})
    for i in range(n):
        grp, _w, key_type, lifetime = rng.choices(groups, weights)[0]
        not_after = now_s + rng.randrange(SPREAD_S)
        not_before = not_after - lifetime * 86400
        issued_at = not_before + 600
        name = f"{grp.split('-')[0]}-{i:07d}"
        serial = serial_hex(random_serial())
        roll = rng.random()
        revoked_at = reason = superseded_by = None
        if roll < 0.03:
            revoked_at, reason = min(now_s - 1, issued_at + rng.randrange(86400 * 30)), rng.choice([1, 4, 5])
            counts["revoked"] += 1
        elif roll < 0.05:
            superseded_by = serial_hex(random_serial())
            counts["superseded"] += 1
        delivered = 0 if rng.random() < 0.01 else 1
        counts["not_delivered"] += 1 - delivered
        yield (serial, cas[grp], rng.choice(owners[grp]), grp, None, f"CN={name},O=plant",
               f"urn:plant:{name}", key_type, not_before, not_after, secrets.token_hex(32),
               "batch" if grp == "mqtt-device" else "csr", issued_at, delivered, superseded_by,
               revoked_at, reason, der)


def fill_certificates(db_path: Path, n: int, cas: dict[str, str], owners: dict[str, list[str]], now_s: int,
                      rng: random.Random, der: bytes = DUMMY_DER) -> dict[str, int]:
    """Insert `certificate_rows` straight into the SQLite store (setup only; a private connection with a big page
    cache). `der`: the certificate column's bytes (the queries benchmarked never read it; its size sets the
    table's)."""
    counts: dict[str, int] = {}
    conn = sqlite3.connect(str(db_path), isolation_level=None)
    conn.execute("PRAGMA cache_size=-1000000")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("BEGIN IMMEDIATE")
    batch = []
    for row in certificate_rows(n, cas, owners, now_s, rng, counts, der):
        batch.append(row)
        if len(batch) == 50_000:
            conn.executemany(_INSERT, batch)
            batch.clear()
    conn.executemany(_INSERT, batch)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return counts


def fill_certificates_pg(url: str, n: int, cas: dict[str, str], owners: dict[str, list[str]], now_s: int,
                         rng: random.Random, der: bytes = DUMMY_DER) -> dict[str, int]:
    """The same rows into a PostgreSQL store with COPY (setup only), then VACUUM ANALYZE: the visibility map an
    index-only scan needs, and statistics for the planner, as a database that has been running a while has."""
    import psycopg

    counts: dict[str, int] = {}
    columns = f"{testing.CERTIFICATE_COLUMNS}, der"
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur, cur.copy(f"COPY certificates ({columns}) FROM STDIN") as copy:
            for row in certificate_rows(n, cas, owners, now_s, rng, counts, der):
                copy.write_row(row)
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE certificates")
    return counts


# The URL of a running PostgreSQL cluster every PostgreSQL benchmark uses instead of starting its own (the smoke
# test's: one cluster for the whole smoke run, not one per benchmark). Its settings are its own: the figures of a
# run with it say only that the benchmark works (`environment()` names it in every report).
SHARED_POSTGRES_ENV = "OTPKI_BENCH_POSTGRES_URL"
_ON_SHARED_CLUSTER = False  # this benchmark ran on it


@contextmanager
def postgres_cluster(settings: dict[str, str]) -> Iterator[testing.PostgresCluster]:
    """A throwaway cluster started with `settings` and stopped afterwards; or, when $OTPKI_BENCH_POSTGRES_URL is
    set, the cluster it names, left running."""
    global _ON_SHARED_CLUSTER
    shared = os.environ.get(SHARED_POSTGRES_ENV)
    if shared:
        _ON_SHARED_CLUSTER = True
        yield testing.PostgresCluster.running(shared)
        return
    cluster = testing.PostgresCluster(settings=settings).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@contextmanager
def postgres_store(durable: bool = False) -> Iterator[str]:
    """The URL of an empty database on a throwaway cluster, stopped afterwards. `durable`: fsync and synchronous
    commits on (what a benchmark of commits needs); off for read benchmarks' setup speed."""
    settings = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"} if durable else {}
    # Memory a production server would be given for a table of millions (the default 128 MB shared_buffers is
    # for a laptop), so that the read benchmarks measure the query, not the page cache.
    settings |= {"shared_buffers": "512MB", "work_mem": "64MB", "effective_cache_size": "1GB"}
    with postgres_cluster(settings) as cluster:
        yield cluster.database()


@contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"otpki-bench-{prefix}-") as d:
        yield Path(d)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds taken by one call. The collector stays on (production runs with it), but starts clean."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def summary(samples: list[float], digits: int = 6) -> dict[str, float]:
    return {"best": round(min(samples), digits), "median": round(statistics.median(samples), digits),
            "worst": round(max(samples), digits), "runs": len(samples)}


def environment() -> dict[str, str]:
    env = {"python": platform.python_version(), "cryptography": cryptography.__version__,
           "machine": platform.machine()}
    if _ON_SHARED_CLUSTER:
        env["postgresql"] = f"a shared cluster (${SHARED_POSTGRES_ENV}) with its own settings, not this benchmark's"
    return env


def emit(*, benchmark: str, engine: dict[str, Any], baseline: dict[str, Any], ratio: float, target: str,
         meets_target: bool, params: dict[str, Any]) -> None:
    out = {"benchmark": benchmark, "engine": engine, "baseline": baseline, "ratio": round(ratio, 4),
           "target": target, "meets_target": bool(meets_target),
           "params": {**params, "environment": environment()}}
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    sys.stdout.flush()


def note(message: str) -> None:
    """Progress for humans, on stderr so stdout stays one JSON object."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)
