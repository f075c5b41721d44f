"""The README cannot rot: every ```bash runnable block runs, in order, in one shell, on a fresh directory.

Blocks are the operator's walkthrough: they share the shell's environment (exports carry over) and a working
directory. Ports the walkthrough uses are environment variables with defaults (`${PLC_PORT:-48410}`); the
test sets them to free ports so it never collides with anything on the machine. The configuration reference
between the config-reference markers must be exactly what `otpki config reference` prints.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from otpki.config_reference import END, START, reference_markdown
from trustlists.testing import free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"^```bash runnable\n(.*?)^```", re.S | re.M)
PORT_VARIABLES = ("PLC_PORT", "GDS_PORT", "SCADA_PORT", "MQTT_PORT")


def runnable_blocks(text: str) -> list[str]:
    return BLOCK.findall(text)


def test_config_reference_is_generated() -> None:
    text = README.read_text()
    assert START in text and END in text, "the README lost its config-reference markers"
    current = text[text.index(START): text.index(END) + len(END)]
    assert current == reference_markdown(), "README config reference is stale: paste `otpki config reference`"


def test_runnable_blocks_run_in_order(tmp_path: Path) -> None:
    blocks = runnable_blocks(README.read_text())
    assert len(blocks) >= 4, "the walkthrough should have runnable blocks"
    script = ["set -euo pipefail", "cd \"$WALKTHROUGH_DIR\""]
    for number, block in enumerate(blocks, 1):
        script.append(f"echo '### README block {number}' >&2")
        script.append(block)
    script.append("echo '### README done' >&2")
    (tmp_path / "walkthrough.sh").write_text("\n".join(script) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTPKI_")}
    env.update({"WALKTHROUGH_DIR": str(tmp_path), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
                "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)})
    env.update({name: str(free_port()) for name in PORT_VARIABLES})
    proc = subprocess.Popen(["bash", str(tmp_path / "walkthrough.sh")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        # Whatever a block left running (a simulator, a server) goes with the session.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    failed_block = re.findall(r"### README block (\d+)", err)
    assert proc.returncode == 0, (f"README block {failed_block[-1] if failed_block else '?'} failed "
                                  f"(exit {proc.returncode}):\n{err[-3000:]}\n{out[-2000:]}")
    assert "### README done" in err
