"""trustlists.safe_files: secrets private from their first byte, files whole or not at all, nothing left over."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from trustlists import safe_files
from trustlists.safe_files import (
    TEMP_PREFIX,
    create_secret,
    private_directory,
    staged_file,
    write_public,
    write_secret,
)

SECRET = b"-----BEGIN PRIVATE KEY-----\nnot really\n-----END PRIVATE KEY-----\n"


@pytest.fixture
def umask_0() -> Iterator[None]:
    """The worst umask an operator can have: anything not explicitly private would be world-writable."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


class FileEvents:
    """Records, at every fsync of a regular file (the content is complete then) and every chmod, the
    file's mode and size, through the real system calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fsyncs: list[tuple[int, int]] = []  # (mode, size)
        self.chmods: list[tuple[object, int, int]] = []  # (fd or path, requested mode, size at that moment)
        real_fsync, real_fchmod, real_chmod = os.fsync, os.fchmod, os.chmod

        def fsync(fd: int) -> None:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                self.fsyncs.append((stat.S_IMODE(st.st_mode), st.st_size))
            real_fsync(fd)

        def fchmod(fd: int, mode: int) -> None:
            self.chmods.append((fd, mode, os.fstat(fd).st_size))
            real_fchmod(fd, mode)

        def chmod(path: object, mode: int, **kwargs: object) -> None:
            self.chmods.append((path, mode, -1))
            real_chmod(path, mode, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "fchmod", fchmod)
        monkeypatch.setattr(os, "chmod", chmod)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(TEMP_PREFIX))


def test_secret_is_owner_only_from_creation_and_never_chmodded(tmp_path: Path, umask_0: None,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    events = FileEvents(monkeypatch)
    target = tmp_path / "device.key"
    write_secret(target, SECRET)
    assert events.fsyncs == [(0o600, len(SECRET))]  # complete content, already 0600 under umask 0
    assert events.chmods == []  # nothing was ever widened (nor narrowed after the fact)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_bytes() == SECRET
    assert _leftovers(tmp_path) == []


def test_public_file_is_widened_only_when_complete(tmp_path: Path, umask_0: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    events = FileEvents(monkeypatch)
    target = tmp_path / "ca.pem"
    write_public(target, b"certificate")
    assert [(mode, size) for _fd, mode, size in events.chmods] == [(0o644, len(b"certificate"))]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_replacing_a_wider_old_file_leaves_a_0600_one(tmp_path: Path) -> None:
    target = tmp_path / "service.key"
    target.write_bytes(b"old")
    target.chmod(0o644)
    write_secret(target, SECRET)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_bytes() == SECRET


@pytest.mark.parametrize("write", [write_secret, write_public, create_secret])
def test_error_mid_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path, write,  # type: ignore[no-untyped-def]
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "file"
    if write is not create_secret:
        target.write_bytes(b"old content")

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write(target, SECRET)
    assert _leftovers(tmp_path) == []
    if write is create_secret:
        assert not target.exists()
    else:
        assert target.read_bytes() == b"old content"


def test_a_failed_check_of_a_staged_file_changes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "ca.pem"
    target.write_bytes(b"old")
    with pytest.raises(ValueError, match="refused"), staged_file(tmp_path, b"new", public=True) as staged:
        assert staged.path.read_bytes() == b"new"
        raise ValueError("refused by openssl")
    assert target.read_bytes() == b"old" and _leftovers(tmp_path) == []


def test_symlink_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    """Someone who can write in the directory plants a link to a file they can read: it gets nothing."""
    bait = tmp_path / "attacker-readable"
    bait.write_bytes(b"")
    target = tmp_path / "device.key"
    target.symlink_to(bait)
    write_secret(target, SECRET)
    assert bait.read_bytes() == b"" and not target.is_symlink()
    assert target.read_bytes() == SECRET and stat.S_IMODE(target.stat().st_mode) == 0o600


def test_create_secret_never_replaces(tmp_path: Path) -> None:
    target = tmp_path / "root.key.pem"
    create_secret(target, b"first")
    with pytest.raises(FileExistsError):
        create_secret(target, b"second")
    assert target.read_bytes() == b"first" and _leftovers(tmp_path) == []
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_private_directory_is_0700_from_creation(tmp_path: Path, umask_0: None) -> None:
    created = private_directory(tmp_path / "a" / "keys")
    assert stat.S_IMODE(created.stat().st_mode) == 0o700
    assert private_directory(created) == created  # idempotent


def test_fsync_dir_ignores_what_cannot_be_opened(tmp_path: Path) -> None:
    safe_files.fsync_dir(tmp_path / "missing")


def test_ca_key_creation_survives_a_planted_or_leftover_temporary(tmp_path: Path, umask_0: None) -> None:
    """The CA key file used to be written through a fixed "<ref>.tmp" name: a leftover from a crash (or a
    name planted by someone who can write there) made every later creation fail with a raw error."""
    from trustlists.errors import AlreadyExists
    from trustlists.keys.files import EncryptedFileKeyBackend
    from trustlists.models import KeyType
    from trustlists.testing import PASSPHRASE

    keys = tmp_path / "keys"
    backend = EncryptedFileKeyBackend(keys, PASSPHRASE)
    keys.mkdir(mode=0o700)
    bait = tmp_path / "bait"
    bait.write_bytes(b"")
    (keys / "root.key.tmp").symlink_to(bait)
    (keys / "issuing.key.tmp").write_bytes(b"half a key from a crash")
    for ref in ("root", "issuing"):
        backend.create(ref, KeyType.EC_P256)
        assert stat.S_IMODE((keys / f"{ref}.key.pem").stat().st_mode) == 0o600
    assert bait.read_bytes() == b"" and _leftovers(keys) == []
    with pytest.raises(AlreadyExists):
        backend.create("root", KeyType.EC_P256)
    assert EncryptedFileKeyBackend(keys, PASSPHRASE).load("root") is not None
