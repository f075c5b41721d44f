"""`otpki --help` as a whole process vs `python -c "import typer, rich"`, the least any typer CLI costs.

engine:   wall time of `otpki --help` (the installed console script; `python -m otpki.cli.main` without one),
          from fork to exit, best of N runs.
baseline: wall time of `python -c "import typer, rich"` with the same interpreter, best of N runs.
The two (and everything below) are run interleaved, round after round, so both see the same machine.

Also reported, with their own floor: `otpki certs --help` and `otpki certs list --help`. Any subcommand makes
typer coerce the group's option values through pydantic TypeAdapters (typer 0.29), so a subcommand's help pays
for importing pydantic whatever the CLI does; its floor is a one-option typer app of the same shape
(`--data-dir` on the callback, one sub-app, one command) asked for `sub --help`.
And which heavy packages `otpki --help` imports (the engine, the fronts, pydantic, rich's console): none.

Target: otpki --help <= 2x the baseline, and a subcommand's help <= 1.5x typer's own floor for it.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import emit, note, parse_args, workdir

HELP_TARGET = 2.0
SUBCOMMAND_TARGET = 1.5
HEAVY = ("trustlists.engine", "otpki.config", "asyncua", "amqtt", "paho", "gmqtt", "cryptography", "pydantic",
         "rich.console", "asyncio")

FLOOR_APP = '''
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="floor", no_args_is_help=True, add_completion=False, rich_markup_mode=None)
sub = typer.Typer(help="a group", no_args_is_help=True)


@app.callback()
def main(data_dir: Annotated[Path | None, typer.Option("--data-dir", help="d")] = None) -> None:
    """The callback."""


@sub.command("list")
def list_(limit: Annotated[int | None, typer.Option(help="n")] = None) -> None:
    """A command."""


app.add_typer(sub, name="sub")
app()
'''

IMPORTED = '''
import json
import sys
from otpki.cli.main import app
try:
    app(["--help"], prog_name="otpki")
except SystemExit:
    pass
heavy = {heavy!r}
sys.stderr.write(json.dumps(sorted(h for h in heavy if any(m == h or m.startswith(h + ".") for m in sys.modules))))
'''


def otpki_command() -> list[str]:
    script = Path(sys.executable).parent / "otpki"
    return [str(script)] if script.exists() else [sys.executable, "-m", "otpki.cli.main"]


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    res = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    took = time.perf_counter() - start
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {res.returncode}: {res.stderr.decode()[-500:]}")
    return took


def ms(samples: list[float]) -> dict[str, float]:
    return {"best": round(min(samples) * 1000, 1), "median": round(statistics.median(samples) * 1000, 1),
            "runs": len(samples)}


def main() -> None:
    args = parse_args(__doc__ or "")
    rounds = 2 if args.quick else 21  # quick: the smoke run checks that it works; two rounds still have a best
    otpki = otpki_command()
    with workdir("cli-startup") as d:
        floor_app = d / "floor_app.py"
        floor_app.write_text(FLOOR_APP)
        cases = {
            "baseline": [sys.executable, "-c", "import typer, rich"],
            "otpki --help": [*otpki, "--help"],
            "typer floor: sub --help": [sys.executable, str(floor_app), "sub", "--help"],
            "otpki certs --help": [*otpki, "certs", "--help"],
            "typer floor: sub list --help": [sys.executable, str(floor_app), "sub", "list", "--help"],
            "otpki certs list --help": [*otpki, "certs", "list", "--help"],
        }
        note(f"cli_startup: {len(cases)} commands x {rounds} rounds")
        for cmd in cases.values():  # warm-up: the OS file cache, .pyc files
            wall(cmd)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, cmd in cases.items():
                samples[name].append(wall(cmd))
    probe = subprocess.run([sys.executable, "-c", IMPORTED.format(heavy=HEAVY)], capture_output=True, text=True,
                           check=True)
    heavy_loaded = json.loads(probe.stderr)
    best = {name: min(s) for name, s in samples.items()}
    help_ratio = best["otpki --help"] / best["baseline"]
    sub_ratios = {"otpki certs --help": best["otpki certs --help"] / best["typer floor: sub --help"],
                  "otpki certs list --help": best["otpki certs list --help"] / best["typer floor: sub list --help"]}
    emit(
        benchmark="cli_startup",
        engine={"otpki --help": ms(samples["otpki --help"]),
                "otpki certs --help": ms(samples["otpki certs --help"]),
                "otpki certs list --help": ms(samples["otpki certs list --help"]),
                "subcommand_help_vs_typer_floor": {k: round(v, 3) for k, v in sub_ratios.items()},
                "heavy_modules_imported_by_help": heavy_loaded},
        baseline={"import typer, rich": ms(samples["baseline"]),
                  "typer floor: sub --help": ms(samples["typer floor: sub --help"]),
                  "typer floor: sub list --help": ms(samples["typer floor: sub list --help"])},
        ratio=help_ratio,
        target=f"otpki --help best <= {HELP_TARGET} x baseline best (ratio = otpki --help / baseline), and each "
               f"subcommand's help <= {SUBCOMMAND_TARGET} x typer's floor for it",
        meets_target=help_ratio <= HELP_TARGET and all(r <= SUBCOMMAND_TARGET for r in sub_ratios.values()),
        params={"rounds": rounds, "statistic": "best run (wall time of the whole process)",
                "otpki": " ".join(otpki), "interleaved": True,
                "heavy_modules_checked": list(HEAVY)},
    )


if __name__ == "__main__":
    main()
