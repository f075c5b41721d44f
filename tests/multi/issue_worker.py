"""One otpki instance issuing certificates (a real process, for tests/multi/test_shared_ca_keys.py).

    python -m tests.multi.issue_worker DATA_DIR OWNER_NAME COUNT GO_FILE

Opens the engine as the CLI does (otpki.toml of DATA_DIR, the store and key backend it names, secrets from the
environment), prints "ready", waits for GO_FILE, issues COUNT certificates from fresh CSRs to the mqtt-device
OWNER_NAME, and prints one JSON line: [[serial, issuing CA id, DER hex], ...].
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from otpki.config import load_settings
from otpki.runtime import open_engine
from trustlists.testing import make_csr


def main(data_dir: str, owner_name: str, count: str, go_file: str) -> int:
    engine = open_engine(load_settings(Path(data_dir)))
    try:
        owner = engine.registry.find("mqtt-device", name=owner_name)
        assert owner is not None, f"no mqtt-device {owner_name}"
        csrs = [make_csr(owner_name) for _ in range(int(count))]
        print("ready", flush=True)
        deadline = time.monotonic() + 120
        while not Path(go_file).exists():
            if time.monotonic() > deadline:
                raise TimeoutError("no go signal")
            time.sleep(0.01)
        issued = [engine.authority.issue_from_csr(csr, owner_id=owner.id, actor=f"worker-{owner_name}")
                  for csr in csrs]
        print(json.dumps([[i.record.serial, i.record.issuer_ca_id, i.certificate_der.hex()] for i in issued]),
              flush=True)
        return 0
    finally:
        engine.close()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
