"""Private SoftHSM2 tokens for tests.

SoftHSM reads its configuration (and with it the token directory) once, at C_Initialize, and python-pkcs11
loads the module into this process. So there is one token directory per test process, set up before the
module is first initialized, and every test gets its own token (label) inside it. SoftHSM also only sees
tokens that existed at C_Initialize, so creating a token after the module is loaded re-initializes it
through the backend's `reload_module`, which makes open backends reconnect.

A missing SoftHSM installation is an error, not a skip: CI installs it (apt-get install softhsm2 opensc).
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from trustlists.keys.pkcs11_session import reload_module

_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


@dataclass(frozen=True)
class SoftHsmToken:
    module: str
    label: str
    pin: str
    so_pin: str
    conf: Path

    def pkcs11_tool(self, *args: str, login: bool = True) -> subprocess.CompletedProcess[str]:
        """Run opensc's pkcs11-tool against this token in a separate process (an independent observer)."""
        tool = shutil.which("pkcs11-tool")
        if tool is None:
            raise RuntimeError("pkcs11-tool is not installed: apt-get install opensc")
        cmd = [tool, "--module", self.module, "--token-label", self.label]
        if login:
            cmd += ["--login", "--pin", self.pin]
        return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "SOFTHSM2_CONF": str(self.conf)})


class SoftHsm:
    """One SoftHSM2 token directory for the whole test process."""

    _shared: SoftHsm | None = None
    _shared_lock = threading.Lock()

    def __init__(self, root: Path, module: str | None = None) -> None:
        self.module = module or find_module()
        util = shutil.which("softhsm2-util")
        if util is None:
            raise RuntimeError("softhsm2-util is not installed: apt-get install softhsm2")
        self._util = util
        self.root = root
        tokendir = root / "tokens"
        tokendir.mkdir(parents=True, exist_ok=True)
        self.conf = root / "softhsm2.conf"
        self.conf.write_text(
            f"directories.tokendir = {tokendir}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n"
        )
        # Must be in place before the first C_Initialize in this process: that is when SoftHSM reads it.
        os.environ["SOFTHSM2_CONF"] = str(self.conf)
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    @classmethod
    def shared(cls) -> SoftHsm:
        with cls._shared_lock:
            if cls._shared is None:
                root = Path(tempfile.mkdtemp(prefix="otpki-softhsm-"))
                atexit.register(shutil.rmtree, root, True)
                cls._shared = cls(root)
            return cls._shared

    def new_token(self, prefix: str = "otpki", pin: str = "123456", so_pin: str = "12345678") -> SoftHsmToken:
        with self._lock:
            label = f"{prefix[:20]}-{next(self._counter)}"  # SoftHSM labels hold at most 32 bytes
            result = subprocess.run(
                [self._util, "--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", pin],
                capture_output=True, text=True, timeout=60,
                env={**os.environ, "SOFTHSM2_CONF": str(self.conf)},
            )
            if result.returncode != 0:
                raise RuntimeError(f"softhsm2-util --init-token failed: {result.stdout}{result.stderr}")
            # A no-op until the module is loaded; afterwards the only way SoftHSM notices the new token.
            reload_module(self.module)
        return SoftHsmToken(module=self.module, label=label, pin=pin, so_pin=so_pin, conf=self.conf)


def find_module() -> str:
    configured = os.environ.get("OTPKI_TEST_PKCS11_MODULE")
    for path in ([configured] if configured else []) + list(_MODULE_CANDIDATES):
        if os.path.isfile(path):
            return path
    raise RuntimeError(
        "SoftHSM2 PKCS#11 module not found (looked in "
        + ", ".join(_MODULE_CANDIDATES)
        + "): apt-get install softhsm2 opensc, or set OTPKI_TEST_PKCS11_MODULE"
    )


def softhsm_token(prefix: str = "otpki", pin: str = "123456") -> SoftHsmToken:
    """A fresh, initialized token in the process-wide SoftHSM token directory."""
    return SoftHsm.shared().new_token(prefix=prefix, pin=pin)
