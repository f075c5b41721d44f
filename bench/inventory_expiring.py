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

Target: <= 50 ms.
"""

from __future__ import annotations

import random
import secrets
import sqlite3
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ACTOR, emit, make_engine, note, parse_args, summary, timed, workdir
from trustlists.policy import load_default_config
from trustlists.serials import random_serial, serial_hex
from trustlists.testing import CERTIFICATE_COLUMNS

TARGET_MS = 50.0
WINDOW = timedelta(days=30)
SPREAD_S = 3 * 365 * 86400
DUMMY_DER = b"\x30\x1e" + b"\x00" * 30  # 32 bytes: the query under test never reads the column
_INSERT = (f"INSERT INTO certificates ({CERTIFICATE_COLUMNS}, der) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def fill(db_path: Path, n: int, cas: dict[str, str], owners: dict[str, list[str]], now_s: int,
         rng: random.Random) -> dict[str, int]:
    """Insert n certificate rows with a private connection (big page cache: setup only)."""
    groups = [("mqtt-device", 0.6, "ec-p256", 365), ("opcua-application", 0.3, "rsa2048", 730),
              ("opcua-user", 0.1, "rsa2048", 365)]
    weights = [g[1] for g in groups]
    counts = {"revoked": 0, "superseded": 0, "not_delivered": 0}
    conn = sqlite3.connect(str(db_path), isolation_level=None)
    conn.execute("PRAGMA cache_size=-1000000")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("BEGIN IMMEDIATE")
    batch = []
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
        batch.append((serial, cas[grp], rng.choice(owners[grp]), grp, None, f"CN={name},O=plant",
                      f"urn:plant:{name}", key_type, not_before, not_after, secrets.token_hex(32),
                      "batch" if grp == "mqtt-device" else "csr", issued_at, delivered, superseded_by,
                      revoked_at, reason, DUMMY_DER))
        if len(batch) == 50_000:
            conn.executemany(_INSERT, batch)
            batch.clear()
    conn.executemany(_INSERT, batch)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return counts


def main() -> None:
    args = parse_args(__doc__ or "")
    n = 20_000 if args.quick else 1_000_000
    reps = 5 if args.quick else 9
    rng = random.Random(99)
    with workdir("inventory") as d:
        note(f"inventory_expiring: engine setup and {n} certificate rows")
        engine = make_engine(d, load_default_config())
        try:
            cas = {ca.group: ca.id for ca in engine.hierarchy.list() if ca.group}
            owners: dict[str, list[str]] = {}
            for grp in cas:
                owners[grp] = [engine.registry.register(group=grp, name=f"{grp}-owner-{j}", actor=ACTOR,
                                                        application_uri=f"urn:plant:{grp}:{j}").id
                               for j in range(5)]
            now_s = int(time.time())
            t0 = time.perf_counter()
            counts = fill(d / "otpki.db", n, cas, owners, now_s, rng)
            fill_s = time.perf_counter() - t0

            raw = sqlite3.connect(str(d / "otpki.db"), isolation_level=None)
            raw_sql = "SELECT serial FROM certificates WHERE not_after BETWEEN ? AND ?"
            # The statement Inventory.expiring runs (see SqlTx.query_certificates), without building records.
            engine_sql = ("SELECT serial, subject, grp, site, owner_id, not_after, delivered FROM certificates "
                          "WHERE not_after >= ? AND not_after <= ? AND revoked_at IS NULL AND superseded_by IS NULL "
                          "ORDER BY not_after")

            def engine_run() -> int:
                return len(engine.inventory.expiring(WINDOW))

            def raw_run() -> int:
                now = int(time.time())
                return len(raw.execute(raw_sql, (now, now + int(WINDOW.total_seconds()))).fetchall())

            def engine_sql_run() -> int:
                now = int(time.time())
                return len(raw.execute(engine_sql, (now, now + int(WINDOW.total_seconds()))).fetchall())

            note(f"inventory_expiring: {reps} runs each")
            for fn in (engine_run, raw_run, engine_sql_run):  # warm-up: SQLite page cache, OS cache
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
            plan = [r[-1] for r in raw.execute("EXPLAIN QUERY PLAN " + engine_sql, (0, 0)).fetchall()]
            raw.close()
            total_rows = engine.inventory.count()
        finally:
            engine.close()
    assert sql_rows == engine_rows, (sql_rows, engine_rows)
    median_engine = statistics.median(engine_ms)
    median_raw = statistics.median(raw_ms)
    median_sql = statistics.median(sql_ms)
    emit(
        benchmark="inventory_expiring",
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
