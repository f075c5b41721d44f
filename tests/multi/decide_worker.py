"""One administrator deciding certificate requests while another decides them the other way (a real process, for
tests/multi/test_decision_race.py).

    python -m tests.multi.decide_worker DIR STORE_URL|- approve|reject IDS_FILE GO_DIR

Opens an engine on DIR (its CA keys; its otpki.db unless STORE_URL is given), then for each request id in IDS_FILE
(one a line) in turn: prints "ready N", waits for the file GO_DIR/N (both workers are let go at once), approves or
rejects the request and notes the outcome: "won", or the error's class and reason. Prints the outcomes as one JSON
line at the end.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from trustlists.errors import OtpkiError
from trustlists.testing import make_engine

from .decide_config import config

GO_DEADLINE_S = 120.0


def _wait_for(go: Path) -> None:
    deadline = time.monotonic() + GO_DEADLINE_S
    while not go.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no go signal {go}")
        time.sleep(0.001)


def main(directory: str, url: str, action: str, ids_file: str, go_dir: str) -> int:
    engine = make_engine(Path(directory), config=config(), store_url=None if url == "-" else url)
    outcomes: list[str] = []
    try:
        for n, request_id in enumerate(Path(ids_file).read_text().split()):
            print(f"ready {n}", flush=True)
            _wait_for(Path(go_dir) / str(n))
            try:
                if action == "approve":
                    engine.requests.approve(request_id, actor="alice")
                else:
                    engine.requests.reject(request_id, actor="bob", reason="not on the list")
                outcomes.append("won")
            except OtpkiError as exc:
                outcomes.append(f"{type(exc).__name__}:{exc.reason}:{exc}")
    finally:
        engine.close()
    print(json.dumps(outcomes), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
