"""A step that fills a directory (`otpki init`, `backup`, `restore`) does it alone, and either finishes or leaves
the directory as it found it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trustlists.errors import InvalidState

__all__ = ["CLAIM_FILE", "claimed"]

# Created (O_EXCL) in the directory by the process filling it, removed when it is done: a second process that
# wants to fill the same directory at the same moment is refused at once, instead of writing into the first one's
# work or, failing later, cleaning the first one's work away with its own.
CLAIM_FILE = ".otpki-busy"


@contextmanager
def claimed(directory: Path, what: str) -> Iterator[None]:
    """Fill `directory` (made, with its parents, if missing) alone and all or nothing.

    InvalidState (directory_busy) when another process is filling it. If the block fails (an error, Ctrl-C),
    what it added under `directory` is removed (the directory and parents too, when they were made here) and the
    files it overwrote are put back: no half data directory, no stray key file. Meant for small directories: every
    file there before the block is kept in memory until it ends."""
    made = directory
    while not made.parent.exists():
        made = made.parent
    existed = directory.exists()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    marker = directory / CLAIM_FILE
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        raise InvalidState(f"{what} {directory} is being filled by another otpki process right now (if none runs, "
                           f"one was killed: remove {marker} and whatever it left there)",
                           reason="directory_busy") from None
    before: dict[Path, tuple[bytes, int] | None] = {}
    for path in directory.rglob("*"):
        regular = path.is_file() and not path.is_symlink()
        before[path] = (path.read_bytes(), path.stat().st_mode & 0o777) if regular else None
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(made, ignore_errors=True)
            raise
        # Deepest first: a new directory's new files go before it.
        for path in sorted(directory.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path not in before:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        for path, kept in before.items():
            if kept is not None and (not path.is_file() or path.read_bytes() != kept[0]):
                path.unlink(missing_ok=True)
                path.write_bytes(kept[0])
                path.chmod(kept[1])
        marker.unlink(missing_ok=True)
        raise
    marker.unlink(missing_ok=True)
