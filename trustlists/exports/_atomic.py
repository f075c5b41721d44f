"""Atomic file replacement: readers see the old file or the new one, never a partial write."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

# Prefix of our temporary files, so that a leftover from a crash is recognisable (and never matches the
# "<label> [<thumbprint>].ext" pattern that marks files as ours).
TEMP_PREFIX = ".otpki-tmp-"


def atomic_write(target: Path, data: bytes, *, mode: int = 0o644, temp_dir: Path | None = None) -> None:
    """Write `data` to `target` via a temporary file, fsync, then os.replace.

    `temp_dir` must be on the same file system as `target` (os.replace is only atomic there); it lets
    callers keep temporary files out of folders that other programs watch.
    """
    directory = temp_dir if temp_dir is not None else target.parent
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def fsync_dir(directory: Path) -> None:
    """Make renames and unlinks in `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
