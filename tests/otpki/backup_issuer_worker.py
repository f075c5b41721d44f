"""An otpki instance that keeps issuing while a backup is taken (tests/otpki/test_backup_restore.py).

    python -m tests.otpki.backup_issuer_worker SERIALS_FILE STOP_FILE

Opens the data directory of OTPKI_DATA_DIR (and OTPKI_STORE_URL) as the CLI does, then issues one certificate
after another to owners of its own, appending each serial to SERIALS_FILE as soon as it is committed, until
STOP_FILE exists (or a deadline passes: it never outlives a failed test). Exit 0, or 1 with the error on stderr.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from otpki.config import load_settings
from otpki.runtime import open_engine
from trustlists.testing import make_csr

DEADLINE_S = 300.0


def main(serials_file: Path, stop_file: Path) -> int:
    engine = open_engine(load_settings())
    try:
        deadline = time.monotonic() + DEADLINE_S
        n = 0
        with serials_file.open("a") as out:
            while not stop_file.exists() and time.monotonic() < deadline:
                n += 1
                owner = engine.registry.register(group="mqtt-device", name=f"worker-{n}", actor="worker")
                issued = engine.authority.issue_from_csr(make_csr(f"worker-{n}"), owner_id=owner.id, actor="worker")
                out.write(issued.record.serial + "\n")
                out.flush()
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
