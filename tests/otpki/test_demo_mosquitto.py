"""`otpki demo` on a real Mosquitto, run from another folder with a relative data directory."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.otpki.demo_cli import OTPKI, demo_env


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _source_tree_status() -> set[str]:
    # Bytecode caches are Python's, not the demo's; everything else (tracked or ignored) must stay as it was.
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=repo,
                         capture_output=True, text=True, check=True).stdout
    return {line for line in out.splitlines() if "__pycache__" not in line and ".pytest_cache" not in line}


def test_demo_with_mosquitto_from_another_folder_with_a_relative_data_dir(tmp_path: Path) -> None:
    """The same lifecycle on a real Mosquitto (IDevID bootstrap through dynsec, revocation through MosquittoSync),
    run from another folder with a relative --data-dir: Mosquitto finds its pid file, the PLC worker processes
    (5 PLCs: more than run in-process) write their PKI under the data directory, and nothing lands outside it."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    before = _source_tree_status()
    res = subprocess.run([str(OTPKI), "-d", "rel-demo", "demo", "--json", "--broker", "mosquitto", "--plcs", "5",
                          "--scada", "1", "--devices", "2"], capture_output=True, text=True, check=False,
                         env=demo_env(), cwd=cwd, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
    report = json.loads(res.stdout)
    assert report["ok"] and report["broker"] == "mosquitto" and report["data_dir"] == str(cwd / "rel-demo")
    assert "Mosquitto" in report["steps"][3]["detail"] and "reconnect refused" in report["steps"][5]["detail"]
    rows = {e["kind"]: e for e in report["endpoints"]}
    assert rows["devices"]["revoked"] == 1 and rows["devices"]["refused"] == 1
    assert "in 2 worker processes" in report["steps"][2]["detail"]
    assert sorted(p.name for p in cwd.iterdir()) == ["rel-demo"]
    data = cwd / "rel-demo"
    assert {f"plcs/plc-{i}" for i in range(1, 6)} <= _tree(data)
    conf = (data / "broker" / "mosquitto.conf").read_text()
    assert f"pid_file {data / 'broker' / 'mosquitto.pid'}\n" in conf
    assert _source_tree_status() == before
