"""One of several processes writing to one PostgreSQL store at once (tests/trustlists/test_store_concurrency.py).

    python -m tests.trustlists.store_race_worker STORE_URL KEYS_DIR OWNER_ID ROUNDS GO_FILE

Opens the engine, prints "ready", waits for GO_FILE (every worker starts at the same moment), then ROUNDS times:
issues a certificate for OWNER_ID, revokes every second one (a CRL each time), re-signs every CRL, asks the shared
request guard to admit one request id that every worker sends. Prints one JSON line: what it issued and revoked,
its guard verdicts, and the first error (type and message), if any.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta
from pathlib import Path

from trustlists.models import KeyType, RevocationReason
from trustlists.policy import load_default_config
from trustlists.request_guard import RateLimit
from trustlists.testing import make_csr, make_engine

GO_DEADLINE_S = 60.0
SHARED_REQUEST = "the-same-request-from-everyone"


def config():  # type: ignore[no-untyped-def]
    cfg = load_default_config()
    return cfg.model_copy(update={"root": cfg.root.model_copy(update={"key_type": KeyType.RSA2048})})


def main(url: str, keys_dir: str, owner_id: str, rounds: int, go_file: str) -> int:
    engine = make_engine(Path(keys_dir), config=config(), store_url=url, busy_timeout_s=60.0)
    out: dict[str, object] = {"issued": [], "revoked": [], "guard": [], "error": None}
    try:
        owner = engine.registry.get(owner_id)
        print("ready", flush=True)
        deadline = time.monotonic() + GO_DEADLINE_S
        while not Path(go_file).exists():
            if time.monotonic() > deadline:
                raise TimeoutError("no go signal")
            time.sleep(0.01)
        for n in range(rounds):
            issued = engine.authority.issue_from_csr(make_csr(owner.name), owner_id=owner.id, actor=owner.name)
            out["issued"].append(issued.record.serial)  # type: ignore[attr-defined]
            if n % 2 == 1:
                engine.authority.revoke(issued.record.serial, reason=RevocationReason.KEY_COMPROMISE,
                                        actor=owner.name)
                out["revoked"].append(issued.record.serial)  # type: ignore[attr-defined]
            engine.authority.refresh_crls(actor=owner.name, force=True)
            out["guard"].append(engine.request_guard.admit(  # type: ignore[attr-defined]
                "race", "device-1", SHARED_REQUEST, expires_at=engine.now() + timedelta(minutes=5),
                limit=RateLimit(burst=100, refill_per_s=1.0)))
    except Exception as exc:  # reported to the test, which fails on it
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        engine.close()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]))
