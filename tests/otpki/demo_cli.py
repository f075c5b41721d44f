"""Running `otpki demo` and the ordinary commands on its data directory as real processes (the demo tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

OTPKI = Path(sys.executable).parent / "otpki"


def demo_env(**extra: str) -> dict[str, str]:
    # No OTPKI_* from the developer's shell: the demo must make its own passphrase file.
    return {**{k: v for k, v in os.environ.items() if not k.startswith("OTPKI_")}, **extra}


def otpki(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(OTPKI), *args], capture_output=True, text=True, check=False, env=env or demo_env(),
                          timeout=timeout)
