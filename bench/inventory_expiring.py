"""Inventory query "expiring in 30 days" over 1M certificate rows (quick: 20k).

The certificates table is filled directly (executemany, one transaction, not timed) with realistic rows:
not_after uniform over the next ~3 years, ~3% revoked, ~2% superseded, ~1% not delivered, three groups and
their real issuing CAs, a few registered owners; the `der` column is a 32-byte dummy blob (no real
certificates: the query under test never reads it).

engine:   `engine.inventory.expiring(timedelta(days=30))` -> list[ExpiringCertificate] (serial, subject, group,
          site, owner, not_after, delivered; from the covering index certificates_expiry), median of several runs.
baseline: `SELECT serial FROM certificates WHERE not_after BETWEEN ? AND ?` through sqlite3 on the same file.
Also reported: the engine's own SQL run through sqlite3 without building records (`engine_sql_only_ms`), which
splits the engine's time into the database part and the Python record-building part.

With --store postgresql: the same on a database of a throwaway PostgreSQL cluster (rows loaded with COPY, then
VACUUM ANALYZE), the baseline and the engine's own SQL through psycopg on the same database; reported as
inventory_expiring_postgresql.

Target: <= 50 ms.
"""

from __future__ import annotations

import random
import sqlite3
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    ACTOR,
    DUMMY_DER,
    emit,
    fill_certificates,
    fill_certificates_pg,
    note,
    parse_args,
    postgres_store,
    summary,
    timed,
    workdir,
)
from trustlists import testing
from trustlists.policy import load_default_config

TARGET_MS = 50.0
WINDOW = timedelta(days=30)


class RawSql:
    """The baseline's connection to the engine's database, and its placeholder style."""

    def __init__(self, directory: Path, url: str | None) -> None:
        if url is None:
            self.conn: Any = sqlite3.connect(str(directory / "otpki.db"), isolation_level=None)
            self.ph = "?"
        else:
            import psycopg

            self.conn = psycopg.connect(url, autocommit=True)
            self.ph = "%s"

    def rows(self, sql: str, params: tuple[int, int]) -> list[Any]:
        return list(self.conn.execute(sql.replace("?", self.ph), params).fetchall())

    def plan(self, sql: str) -> list[str]:
        if self.ph == "?":
            return [r[-1] for r in self.conn.execute("EXPLAIN QUERY PLAN " + sql, (0, 0)).fetchall()]
        return [r[0] for r in self.conn.execute("EXPLAIN " + sql.replace("?", "%s"), (0, 0)).fetchall()]


def main() -> None:
    args = parse_args(__doc__ or "")
    if args.store == "postgresql":
        with postgres_store() as url:
            run(args.quick, url)
    else:
        run(args.quick, None)


def run(quick: bool, url: str | None) -> None:
    n = 20_000 if quick else 1_000_000
    reps = 5 if quick else 9
    rng = random.Random(99)
    with workdir("inventory") as d:
        note(f"inventory_expiring: engine setup and {n} certificate rows ({'PostgreSQL' if url else 'SQLite'})")
        engine = testing.make_engine(d, config=load_default_config(), store_url=url)
        try:
            engine.hierarchy.initialize(actor=ACTOR)
            cas = {ca.group: ca.id for ca in engine.hierarchy.list() if ca.group}
            owners: dict[str, list[str]] = {}
            for grp in cas:
                owners[grp] = [engine.registry.register(group=grp, name=f"{grp}-owner-{j}", actor=ACTOR,
                                                        application_uri=f"urn:plant:{grp}:{j}").id
                               for j in range(5)]
            now_s = int(time.time())
            t0 = time.perf_counter()
            if url is None:
                counts = fill_certificates(d / "otpki.db", n, cas, owners, now_s, rng)
            else:
                counts = fill_certificates_pg(url, n, cas, owners, now_s, rng)
            fill_s = time.perf_counter() - t0

            raw = RawSql(d, url)
            raw_sql = "SELECT serial FROM certificates WHERE not_after BETWEEN ? AND ?"
            # The statement Inventory.expiring runs (see SqlTx.query_certificates), without building records.
            engine_sql = ("SELECT serial, subject, grp, site, owner_id, not_after, delivered FROM certificates "
                          "WHERE not_after >= ? AND not_after <= ? AND revoked_at IS NULL AND superseded_by IS NULL "
                          "ORDER BY not_after")

            def engine_run() -> int:
                return len(engine.inventory.expiring(WINDOW))

            def raw_run() -> int:
                now = int(time.time())
                return len(raw.rows(raw_sql, (now, now + int(WINDOW.total_seconds()))))

            def engine_sql_run() -> int:
                now = int(time.time())
                return len(raw.rows(engine_sql, (now, now + int(WINDOW.total_seconds()))))

            note(f"inventory_expiring: {reps} runs each")
            for fn in (engine_run, raw_run, engine_sql_run):  # warm-up: page caches
                fn()
            engine_ms: list[float] = []
            raw_ms: list[float] = []
            sql_ms: list[float] = []
            engine_rows = raw_rows = sql_rows = 0
            for _ in range(reps):  # interleaved
                t, raw_rows = timed(raw_run)
                raw_ms.append(t * 1000)
                t, engine_rows = timed(engine_run)
                engine_ms.append(t * 1000)
                t, sql_rows = timed(engine_sql_run)
                sql_ms.append(t * 1000)
            plan = raw.plan(engine_sql)
            raw.conn.close()
            total_rows = engine.inventory.count()
        finally:
            engine.close()
    assert sql_rows == engine_rows, (sql_rows, engine_rows)
    median_engine = statistics.median(engine_ms)
    median_raw = statistics.median(raw_ms)
    median_sql = statistics.median(sql_ms)
    emit(
        benchmark="inventory_expiring" + ("_postgresql" if url else ""),
        engine={"ms": summary(engine_ms, 3), "rows_returned": engine_rows,
                "engine_sql_only_ms": summary(sql_ms, 3),
                "record_building_ms_estimate": round(median_engine - median_sql, 3),
                "us_per_row": round(median_engine * 1000 / max(engine_rows, 1), 3),
                "query_plan": plan},
        baseline={"ms": summary(raw_ms, 3), "rows_returned": raw_rows, "sql": raw_sql},
        ratio=median_engine / median_raw,
        target=f"engine median <= {TARGET_MS} ms (ratio = engine median / raw SQL median)",
        meets_target=median_engine <= TARGET_MS,
        params={
            "store": "PostgreSQL (throwaway cluster, 127.0.0.1)" if url else "SQLite",
            "rows_in_table": total_rows, "window_days": WINDOW.days, "runs": reps, "statistic": "median",
            "not_after": "uniform over now .. now+3 years", "row_mix": counts,
            "der_column": f"{len(DUMMY_DER)}-byte dummy blob (not real certificates)",
            "groups": "mqtt-device 60%, opcua-application 30%, opcua-user 10% (real issuing CA ids)",
            "setup_fill_s": round(fill_s, 2),
            "baseline_note": "the raw SQL also returns revoked/superseded rows in the window; the engine "
                             "excludes them and orders by not_after",
        },
    )


if __name__ == "__main__":
    main()
