"""Run every benchmark (one process each, one after the other) and print their results as one JSON array.

    PYTHONPATH=. .venv/bin/python bench/run_all.py [--quick]

A benchmark that fails is reported as {"benchmark": name, "error": ...} (its traceback goes to stderr) and
makes the exit status 1;
a benchmark that runs but misses its target does not (see each result's `meets_target`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
BENCHMARKS = ["issuance", "crl", "revocation_check", "inventory_expiring", "gds_pull", "push_fleet", "mqtt_connect",
              "mqtt_revocation_mosquitto", "cli_startup", "cli_certs_list", "revocation_across_instances",
              "pg_issuance",
              "inventory_expiring_postgresql", "crl_postgresql", "batch_workers", "ocsp", "console", "est_enroll"]
# Benchmarks that are another run of a script: name -> (script, its arguments).
VARIANTS = {"inventory_expiring_postgresql": ("inventory_expiring", ["--store", "postgresql"]),
            "crl_postgresql": ("crl", ["--store", "postgresql"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    parser.add_argument("--only", action="append", choices=BENCHMARKS, help="run only these (repeatable)")
    args = parser.parse_args()
    env = dict(os.environ)
    root = str(BENCH_DIR.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    results: list[dict[str, object]] = []
    failed = False
    for name in args.only or BENCHMARKS:
        script, extra = VARIANTS.get(name, (name, []))
        cmd = [sys.executable, str(BENCH_DIR / f"{script}.py"), *extra] + (["--quick"] if args.quick else [])
        print(f"[run_all] {name}{' --quick' if args.quick else ''}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        # stdout is the benchmark's JSON; its stderr (progress, tracebacks) goes straight to ours.
        proc = subprocess.run(cmd, cwd=root, env=env, stdout=subprocess.PIPE, text=True)
        wall = round(time.perf_counter() - start, 2)
        try:
            if proc.returncode != 0:
                raise ValueError(f"exit status {proc.returncode}")
            result = json.loads(proc.stdout)
            result["wall_s"] = wall
        except ValueError as exc:
            failed = True
            result = {"benchmark": name, "error": f"{exc} (its stderr is above)",
                      "stdout_tail": proc.stdout.strip().splitlines()[-5:], "wall_s": wall}
        results.append(result)
    json.dump(results, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
