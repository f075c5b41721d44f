"""`otpki certs list` on a 10k-certificate inventory (quick: 1k), the whole command, vs the bare SQL query.

Setup (not timed): `otpki init` makes a real data directory (a subprocess, as an operator would); five owners
per group are registered through the engine; the certificates table is then filled straight with SQL
(`bench._common.fill_certificates`: realistic rows, ~3% revoked, ~2% superseded, three groups and their real
issuing CAs) with a 600-byte `der` per row, about a real leaf's size, so the table has the pages a real one has.
Listing never reads the column; issuing 10k real certificates would only make the setup slow.

engine:   wall time of `otpki -d DIR certs list` (the table) and of `... certs list --json`, whole processes
          (console script), their output read through a pipe and checked (every row is there), best of N.
baseline: the bare SQL query for the same rows through sqlite3 in this process: every column the inventory
          record has, all rows, in the command's order (`ORDER BY not_after, serial`), best of N.
Interleaved, round after round.

Target: the table command (best) under 0.5 s (ratio = table command / bare query).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ACTOR, emit, fill_certificates, note, parse_args, workdir
from trustlists.testing import CERTIFICATE_COLUMNS

TARGET_S = 0.5
DER_BYTES = 600
PASSPHRASE = "a benchmark passphrase"


def otpki_command() -> list[str]:
    script = Path(sys.executable).parent / "otpki"
    return [str(script)] if script.exists() else [sys.executable, "-m", "otpki.cli.main"]


def prepare(data_dir: Path, n: int, env: dict[str, str]) -> dict[str, int]:
    config = data_dir.parent / "bench.toml"
    config.write_text('[pki.root]\nkey_type = "ec-p256"\n')  # the root's key type only changes the setup's time
    subprocess.run([*otpki_command(), "-d", str(data_dir), "init", "--config", str(config)], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    from otpki.config import load_settings
    from otpki.runtime import open_engine

    engine = open_engine(load_settings(data_dir))
    try:
        cas = {ca.group: ca.id for ca in engine.hierarchy.list()
               if ca.group in ("mqtt-device", "opcua-application", "opcua-user")}
        owners = {group: [engine.registry.register(group=group, name=f"{group}-owner-{j}", actor=ACTOR,
                                                   application_uri=f"urn:plant:{group}:{j}").id for j in range(5)]
                  for group in cas}
    finally:
        engine.close()
    return fill_certificates(data_dir / "otpki.db", n, cas, owners, int(time.time()), random.Random(7),
                             der=os.urandom(DER_BYTES))


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {res.returncode}: {res.stderr[-500:]}")
    return took, res.stdout


def summary_s(samples: list[float]) -> dict[str, float]:
    return {"best": round(min(samples), 4), "median": round(statistics.median(samples), 4), "runs": len(samples)}


def main() -> None:
    args = parse_args(__doc__ or "")
    n = 1_000 if args.quick else 10_000
    rounds = 3 if args.quick else 9
    with workdir("certs-list") as d:
        data_dir = d / "pki"
        env = {**os.environ, "OTPKI_CA_PASSPHRASE": PASSPHRASE}
        note(f"cli_certs_list: a data directory with {n} certificates")
        t0 = time.perf_counter()
        mix = prepare(data_dir, n, env)
        setup_s = time.perf_counter() - t0
        # The listing needs no CA key: the command runs without the passphrase, as a read-only operator would.
        env.pop("OTPKI_CA_PASSPHRASE")
        otpki = otpki_command()
        table_cmd = [*otpki, "-d", str(data_dir), "certs", "list"]
        json_cmd = [*table_cmd, "--json"]
        conn = sqlite3.connect(str(data_dir / "otpki.db"))
        sql = f"SELECT {CERTIFICATE_COLUMNS} FROM certificates ORDER BY not_after, serial"

        def bare_query() -> tuple[float, int]:
            start = time.perf_counter()
            rows = conn.execute(sql).fetchall()
            return time.perf_counter() - start, len(rows)

        for fn in (lambda: run(table_cmd, env), lambda: run(json_cmd, env), bare_query):  # warm-up: caches
            fn()
        note(f"cli_certs_list: {rounds} rounds")
        table_s: list[float] = []
        json_s: list[float] = []
        sql_s: list[float] = []
        rows_sql = 0
        table_out = json_out = ""
        for _ in range(rounds):
            t, rows_sql = bare_query()
            sql_s.append(t)
            t, table_out = run(table_cmd, env)
            table_s.append(t)
            t, json_out = run(json_cmd, env)
            json_s.append(t)
        conn.close()
    table_lines = table_out.splitlines()
    assert table_lines[-1] == f"{n} certificates" and len(table_lines) == n + 2, table_lines[-1]
    assert len(json.loads(json_out)) == n == rows_sql
    ratio = min(table_s) / min(sql_s)
    emit(
        benchmark="cli_certs_list",
        engine={"table_s": summary_s(table_s), "json_s": summary_s(json_s), "rows_listed": n},
        baseline={"bare_sql_s": summary_s(sql_s), "rows": rows_sql, "sql": sql},
        ratio=ratio,
        target=f"`otpki certs list` (table, whole process) best < {TARGET_S} s; ratio = command / bare SQL query",
        meets_target=min(table_s) < TARGET_S,
        params={"certificates": n, "rounds": rounds, "statistic": "best run", "row_mix": mix,
                "der_column": f"{DER_BYTES} random bytes per row (about a leaf certificate's size)",
                "command": " ".join([*otpki, "-d", "DIR", "certs", "list"]),
                "setup_s": round(setup_s, 2)},
    )


if __name__ == "__main__":
    main()
