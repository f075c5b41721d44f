"""What a command costs before it does anything: the modules `otpki --help` and the configuration import.

typer builds every command on every run, so whatever a command module imports at the top is paid by every
`otpki ...`. Each case runs in a fresh interpreter and reports the heavy packages it loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FRONT_STACKS = ("asyncua", "amqtt", "paho", "gmqtt")
ENGINE = ("trustlists.engine", "trustlists.models", "otpki.config", "cryptography")

PROBE = """
import json, sys
{code}
wanted = {wanted!r}
loaded = sorted(w for w in wanted if any(m == w or m.startswith(w + ".") for m in sys.modules))
sys.stderr.write("LOADED" + json.dumps(loaded))
"""


def loaded_by(code: str, wanted: tuple[str, ...]) -> list[str]:
    res = subprocess.run([sys.executable, "-c", PROBE.format(code=code, wanted=wanted)], capture_output=True,
                         text=True, cwd=ROOT, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stderr.rsplit("LOADED", 1)[1])


def run_cli(*args: str) -> str:
    return ("from otpki.cli.main import app\n"
            "try:\n"
            f"    app({list(args)!r}, prog_name='otpki')\n"
            "except SystemExit as exc:\n"
            "    assert exc.code == 0, exc.code\n")


def test_otpki_help_loads_no_engine_no_front_no_pydantic_no_rich_console() -> None:
    assert loaded_by(run_cli("--help"), (*FRONT_STACKS, *ENGINE, "pydantic", "rich.console", "asyncio")) == []


def test_a_command_s_help_loads_no_engine_and_no_front() -> None:
    """(typer itself imports pydantic for any subcommand: it coerces option values with TypeAdapters.)"""
    for args in (["certs", "list", "--help"], ["mqtt", "serve", "--help"], ["gds", "serve", "--help"],
                 ["push", "--help"]):
        assert loaded_by(run_cli(*args), (*FRONT_STACKS, *ENGINE)) == [], args


def test_the_configuration_loads_no_opc_ua_or_mqtt_stack() -> None:
    assert loaded_by("import otpki.config", FRONT_STACKS) == []
