"""Writing files that hold a secret or a trust decision: whole or not at all, never readable by others.

Every such file (private keys, the dynsec file with the admin password hash, CA/CRL files a broker trusts,
OPC UA PKI folders, the configuration) is written the same way:

1. a temporary file is created next to the target (or in `temp_dir`, same file system) by
   `tempfile.mkstemp`: O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600, a random name with TEMP_PREFIX. So it is
   private from its first byte whatever the umask, and no file or symlink planted by someone else is
   ever followed or reused;
2. the data is written in full; a public file (certificates, CA/CRL bundles) is widened to 0644 only
   now, on the complete temporary file; a secret is never chmodded at all (0600, or narrower if the
   umask says so); then the file is fsynced;
3. os.replace puts it in place (readers see the old file or the new one, and a symlink at the target is
   replaced, never followed), and the directory is fsynced so the rename survives a power cut.

Any error removes the temporary file and leaves the old target untouched. A temporary file can only be left
behind by a kill -9 or a power cut; it is then 0600 and recognisable by TEMP_PREFIX.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Prefix of our temporary files, so that a leftover from a crash is recognisable (and never matches the
# "<label> [<thumbprint>].ext" pattern that marks exported files as ours).
TEMP_PREFIX = ".otpki-tmp-"
PUBLIC_MODE = 0o644
PRIVATE_DIR_MODE = 0o700


def write_secret(target: Path, data: bytes, *, temp_dir: Path | None = None) -> None:
    """Atomically replace `target` with `data`, readable by its owner only from the first byte."""
    with staged_file(Path(temp_dir or Path(target).parent), data, public=False) as staged:
        staged.commit(Path(target))


def write_public(target: Path, data: bytes, *, temp_dir: Path | None = None) -> None:
    """Atomically replace `target` with `data`, ending world-readable (0644): certificates, CA and CRL files."""
    with staged_file(Path(temp_dir or Path(target).parent), data, public=True) as staged:
        staged.commit(Path(target))


def create_secret(target: Path, data: bytes) -> None:
    """Like write_secret, but never replaces an existing file: FileExistsError if `target` exists.

    The complete temporary file is hard-linked to `target` (link(2) fails if the name exists), so two
    writers racing for one name cannot overwrite each other, and nobody ever sees a partial file.
    """
    target = Path(target)
    with staged_file(target.parent, data, public=False) as staged:
        os.link(staged.path, target)  # the temporary name is removed when the block ends
    fsync_dir(target.parent)


def private_directory(path: Path) -> Path:
    """Create `path` (and missing parents) to hold secrets: a directory we create is 0700 from the start.

    An existing directory is left as the operator set it up (a group that runs the broker may need to
    traverse it); the secrets inside are 0600 either way.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    return path


@dataclass
class StagedFile:
    """A complete, fsynced temporary file in its final mode, waiting to be renamed into place."""

    path: Path
    committed: bool = False

    def commit(self, target: Path) -> None:
        """Rename onto `target` (atomic on one file system) and make the rename durable."""
        os.replace(self.path, target)
        self.committed = True
        fsync_dir(Path(target).parent)
        if Path(target).parent != self.path.parent:
            fsync_dir(self.path.parent)


@contextlib.contextmanager
def staged_file(directory: Path, data: bytes, *, public: bool) -> Iterator[StagedFile]:
    """Write `data` to a new temporary file in `directory` (see the module docstring for the rules).

    For callers that must check the file before it goes live (a CA file verified with openssl) or
    commit several files in a given order. Leaving the block without `commit` removes the file.
    """
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
    staged = StagedFile(Path(name))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if public:  # widened only now that the content is complete; fsynced with it
                os.fchmod(fh.fileno(), PUBLIC_MODE)
            os.fsync(fh.fileno())
        yield staged
    finally:
        if not staged.committed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged.path)


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
