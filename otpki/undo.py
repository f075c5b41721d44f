"""A step that fills a directory either finishes or leaves the directory as it found it (`otpki init`)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["undone_on_failure"]


@contextmanager
def undone_on_failure(directory: Path) -> Iterator[None]:
    """If the block fails (an error, Ctrl-C), remove what it added under `directory`, the directory itself (and
    the parents) when the block made it, and put back the files it overwrote: no half data directory, no stray key file.

    Meant for small directories (it notes every path and keeps a copy of every file there before the block)."""
    # The highest directory the block may make (mkdir parents=True): removed whole on failure.
    made = directory
    while not made.parent.exists():
        made = made.parent
    existed = directory.exists()
    before: dict[Path, tuple[bytes, int] | None] = {}
    if existed:
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
        raise
