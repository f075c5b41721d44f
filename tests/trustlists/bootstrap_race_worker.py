"""One of several processes racing to enroll one device, each with its own bootstrap certificate.

    python -m tests.trustlists.bootstrap_race_worker DB_DIR OWNER_ID CREDENTIAL_PEM_FILE GO_FILE

Opens the engine on the shared SQLite file, prints "ready", waits for GO_FILE to appear (so that every worker
starts enrolling at the same moment), enrolls with a fresh CSR and prints one JSON line: {"serial": ...} or
{"reason": ...}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tests.mqtt_broker_auth.conftest import mqtt_config
from trustlists.errors import OtpkiError
from trustlists.testing import make_csr, make_engine

GO_DEADLINE_S = 60.0


def main(db_dir: str, owner_id: str, credential_file: str, go_file: str) -> int:
    engine = make_engine(Path(db_dir), config=mqtt_config(), busy_timeout_s=60.0)
    try:
        owner = engine.registry.get(owner_id)
        csr = make_csr(owner.name)
        credential = Path(credential_file).read_bytes()
        print("ready", flush=True)
        deadline = time.monotonic() + GO_DEADLINE_S
        while not Path(go_file).exists():
            if time.monotonic() > deadline:
                print(json.dumps({"reason": "no go signal"}), flush=True)
                return 1
            time.sleep(0.001)
        try:
            issued = engine.bootstrap.enroll(owner_id=owner_id, credential=credential, csr=csr, actor="race")
        except OtpkiError as exc:
            print(json.dumps({"reason": exc.reason}), flush=True)
            return 0
        print(json.dumps({"serial": issued.record.serial}), flush=True)
        return 0
    finally:
        engine.close()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
