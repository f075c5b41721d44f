"""One otpki instance asking the shared request guard (a real process, for tests/multi/test_request_guard.py).

    python -m tests.multi.guard_worker URL DIR NAME GO_FILE

Opens an engine on URL, prints "ready", waits for GO_FILE (every worker starts at once), then asks the guard:
the request id "shared" for the subject "dev-replay" (which every worker sends: a replay for all but one), and
RATE_REQUESTS distinct ids of its own for the subject "dev-rate" (one bucket for all workers). Prints the verdicts
as one JSON line.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta
from pathlib import Path

from trustlists.request_guard import RateLimit
from trustlists.testing import make_engine

RATE_REQUESTS = 20
RATE_LIMIT = RateLimit(burst=10, refill_per_s=1e-6)  # no refill within a test: the burst is all there is
LOOSE = RateLimit(burst=1000, refill_per_s=1.0)


def main(url: str, directory: str, name: str, go_file: str) -> int:
    engine = make_engine(Path(directory), store_url=url, instance_id=name)
    try:
        print("ready", flush=True)
        deadline = time.monotonic() + 120
        while not Path(go_file).exists():
            if time.monotonic() > deadline:
                raise TimeoutError("no go signal")
            time.sleep(0.01)
        expires = engine.now() + timedelta(minutes=5)
        guard = engine.request_guard
        replay = guard.admit("enroll", "dev-replay", "shared", expires_at=expires, limit=LOOSE)
        rate = [guard.admit("enroll", "dev-rate", f"{name}-{i}", expires_at=expires, limit=RATE_LIMIT)
                for i in range(RATE_REQUESTS)]
        print(json.dumps({"replay": replay, "rate": rate}), flush=True)
        return 0
    finally:
        engine.close()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
