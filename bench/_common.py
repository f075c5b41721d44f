"""Shared plumbing for the benchmarks: argument parsing, timing, a throw-away engine, JSON output.

Every benchmark measures the engine and its baseline in the same process and run (the machines are noisy,
so figures from another run are not comparable), prints one JSON object and exits 0 whether or not the
target is met; `meets_target` says which.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
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

ACTOR = "bench"


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: a smoke run that checks the benchmark works (< 20 s)")
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
    return {"python": platform.python_version(), "cryptography": cryptography.__version__,
            "machine": platform.machine()}


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
