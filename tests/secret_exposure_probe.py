"""Run the otpki CLI and record every moment a secret in the watched directories was readable by others.

    python tests/secret_exposure_probe.py REPORT.json WATCH_DIR[,WATCH_DIR...] -- <otpki arguments>

The umask is set to 0 first: the worst an operator can have, where anything not created private is
world-readable. A Python audit hook runs before every file operation the process makes (open, chmod,
rename, link, unlink, mkdir, starting a subprocess, ...) and looks at every regular file under the watched
directories: one that holds a secret (a PEM private key, a dynsec client list with password hashes) and
whose mode lets group or others read it is recorded with that mode. A file's mode and content only change
through such operations (and a child process only runs between two of them), so this sees every state a
secret file went through, temporary files included. The report, a JSON list of [path, mode], is written
when the command ends; its exit code is the command's. Tests call `run_under_probe`.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

TIMEOUT_S = 120

SECRET_MARKERS = (b"PRIVATE KEY-----", b'"clients"')


class ExposureWatch:
    def __init__(self, directories: list[Path]) -> None:
        self.directories = directories
        self.seen: set[tuple[str, int]] = set()
        self._busy = False

    def __call__(self, event: str, args: tuple[object, ...]) -> None:
        if self._busy or event in ("import", "compile", "exec", "sys._getframe", "object.__getattr__"):
            return
        self._busy = True  # our own scandir/open below raise audit events too
        try:
            self._look()
        finally:
            self._busy = False

    def _look(self) -> None:
        for directory in self.directories:
            for root, _dirs, files in os.walk(directory):
                for name in files:
                    path = os.path.join(root, name)
                    try:
                        st = os.lstat(path)
                        if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o077:
                            continue
                        with open(path, "rb") as fh:
                            data = fh.read()
                    except OSError:
                        continue
                    if any(marker in data for marker in SECRET_MARKERS):
                        self.seen.add((path, stat.S_IMODE(st.st_mode)))


def run_under_probe(tmp_path: Path, watched: list[Path], *args: str, env: dict[str, str]
                    ) -> tuple[subprocess.CompletedProcess[str], list[list[object]]]:
    """Run `otpki ARGS` in a new process under the probe: (the process, every exposure seen as [path, mode])."""
    report = tmp_path / f"exposure-{len(list(tmp_path.glob('exposure-*')))}.json"
    # -P: without it the script's own directory (tests/) comes first on sys.path, and the test packages that
    # mirror the product's (tests/mqtt_broker_auth/embedded, ...) would shadow the modules the CLI imports.
    res = subprocess.run([sys.executable, "-P", __file__, str(report), ",".join(map(str, watched)), "--", *args],
                         capture_output=True, text=True, timeout=TIMEOUT_S, check=False, env={**os.environ, **env})
    return res, json.loads(report.read_text()) if report.exists() else [["no report", -1]]


def main() -> int:
    report, watched, separator, *otpki_args = sys.argv[1:]
    assert separator == "--", __doc__
    os.umask(0)
    watch = ExposureWatch([Path(d) for d in watched.split(",")])
    sys.addaudithook(watch)
    from otpki.cli.main import app

    code = 0
    try:
        app(args=otpki_args, prog_name="otpki")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        watch._busy = True
        Path(report).write_text(json.dumps(sorted(watch.seen)))
    return code


if __name__ == "__main__":
    sys.exit(main())
