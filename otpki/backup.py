"""`otpki backup DEST` and `otpki restore SRC`: a data directory's state, taken online, rebuilt on a fresh machine.

A backup is a directory:
- `store.db`: the store as of one moment (`Store.snapshot`: SQLite's WAL snapshot, PostgreSQL's REPEATABLE READ),
  copied row for row into a SQLite file and checked (trustlists/store_copy.py), whatever the backend. Instances
  keep serving while it is read. Its audit chain ends with the backup's own record (store.backup);
- `keys/`: the CA key files as they are, encrypted PKCS#8 (a file that is not is refused, not copied). Keys in an
  HSM stay there: the store's CA rows name them (key_backend pkcs11, key_ref) and otpki.toml names the token;
- `otpki.toml`, when there is one;
- `manifest.json`, written last (a backup without it is incomplete): what was taken, with the SHA-256 of each file.

Never in a backup: the CA key passphrase, the HSM PIN and the other secret files otpki.toml names. They are the
operator's to keep apart (a backup with the passphrase beside the keys would be keys in clear). Nor the key that
seals the console users' TOTP secrets (`console-secrets.key`): it is unsealed key material, so the backup only
names it (`kept_apart`), and a restore says to copy it (without it every console user needs a new TOTP secret).

A restore checks every file against the manifest, fills an empty data directory and copies the store into the
store that directory's settings name (or `--store`). CRLs published after the backup are unknown to it, so every
CA's next CRL number starts a gap above the last one in the backup, and so does every group's trust-list version
(the current one is recorded again under the new number, so every PLC and broker is handed it as newer than
whatever it got after the backup); certificates issued after the backup are
unknown too: `otpki certs reconcile` names those it is shown (from the devices, the GDS, the issuing scripts).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel

from otpki.config import CONFIG_FILE, KEYS_DIR, Settings, load_settings
from otpki.undo import CLAIM_FILE, claimed
from trustlists.clock import utcnow
from trustlists.errors import InvalidInput, KeyAccessError
from trustlists.safe_files import create_secret, private_directory, write_secret
from trustlists.secret_box import KEY_FILE as SECRETS_KEY_FILE
from trustlists.store import SqliteStore, describe_url, open_store
from trustlists.store_copy import StoreCopy, TableCopy, copy_store

__all__ = ["BACKUP_FORMAT", "BackupManifest", "RestoreResult", "backup", "restore"]

BACKUP_FORMAT = 1
MANIFEST = "manifest.json"
STORE_FILE = "store.db"
# CRLs a CA may have published between the backup and the restore, at most (one a minute for two years); the
# next CRL of a restored CA is numbered above the last one in the backup by this much (restore --crl-number-gap).
DEFAULT_CRL_NUMBER_GAP = 1_000_000
# Trust-list versions the plant may have handed out between the backup and the restore, at most: a group's trust
# list changes with every CRL of its CAs, so as often as CRLs are published (restore --trust-version-gap).
DEFAULT_TRUST_VERSION_GAP = 1_000_000
_ENCRYPTED_PEM = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"


class BackupFile(BaseModel):
    path: str  # relative to the backup directory, / separated
    sha256: str
    size: int


class BackupManifest(BaseModel):
    format: int
    created_at: datetime
    source: str  # the store it was taken from (without a password)
    audit_records: int  # the source's chain, verified; the backup's store adds its store.backup record
    tables: list[TableCopy]
    files: list[BackupFile]
    hsm_keys: list[str]  # CA id: key_ref of each CA whose key stays in the HSM
    # Files of the data directory a restored instance needs that the backup leaves out because they are secrets in
    # clear: the operator copies them (relative to the data directory). Older backups have none.
    kept_apart: list[str] = []


class RestoreResult(BaseModel):
    data_dir: str
    store: str
    copy_: StoreCopy
    files: int
    to_copy: list[str]  # the backup's kept_apart: copy them from the old data directory (or a safe) into data_dir


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _empty_directory(path: Path, what: str) -> None:
    if path.exists() and (not path.is_dir() or any(p.name != CLAIM_FILE for p in path.iterdir())):
        raise InvalidInput(f"{what} {path} exists and is not an empty directory: give a new one",
                           reason="not_empty")


def _copy_secret(source: Path, target: Path) -> None:
    create_secret(target, source.read_bytes())


@contextmanager
def _filled(directory: Path, what: str) -> Iterator[None]:
    """Fill the new or empty `directory`, alone (a second backup or restore into it at the same moment is refused,
    and leaves this one's work alone); if that fails, empty it again: no half backup, no half data directory."""
    with claimed(directory, what):
        _empty_directory(directory, what)  # again, now that nobody else can be filling it
        yield


def _key_files(keys_dir: Path) -> list[tuple[Path, bytes]]:
    """The CA key files and their content, each checked to be encrypted."""
    found = []
    for key_file in sorted(keys_dir.glob("*.key.pem")) if keys_dir.is_dir() else []:
        data = key_file.read_bytes()
        if not data.lstrip().startswith(_ENCRYPTED_PEM):
            raise KeyAccessError(f"the CA key file {key_file} is not encrypted: not backed up (encrypt it "
                                 "with the passphrase first)", reason="key_file_not_encrypted")
        found.append((key_file, data))
    return found


def backup(settings: Settings, dest: Path, *, actor: str) -> BackupManifest:
    """Take a backup of the data directory `settings` names into the new directory `dest`."""
    dest = dest.absolute()
    _empty_directory(dest, "the backup directory")
    _key_files(settings.keys_dir)  # before anything is written
    with _filled(dest, "the backup directory"):
        return _backup(settings, dest, actor=actor)


def _backup(settings: Settings, dest: Path, *, actor: str) -> BackupManifest:
    private_directory(dest)
    source = open_store(settings.store_url, busy_timeout_s=settings.file.store.busy_timeout_s)
    try:
        snapshot = SqliteStore(dest / STORE_FILE)
        try:
            copied = copy_store(source, snapshot, source_name=describe_url(settings.store_url),
                                target_name=STORE_FILE, actor=actor, action="store.backup")
        finally:
            snapshot.close()
    finally:
        source.close()
    (dest / STORE_FILE).chmod(0o600)
    # The keys after the snapshot: a CA's key file is written before its row commits, so every CA the snapshot
    # holds has its file by now (a CA made since adds a file nobody needs).
    files = [dest / STORE_FILE]
    needed = {f"{ca.key_ref}.key.pem" for ca in copied.ca_keys if ca.key_backend == "file"}
    keys_dir = settings.keys_dir
    key_files = _key_files(keys_dir)  # again: a CA made meanwhile added one
    if key_files:
        private_directory(dest / KEYS_DIR)
    for key_file, data in key_files:
        create_secret(dest / KEYS_DIR / key_file.name, data)
        files.append(dest / KEYS_DIR / key_file.name)
    missing = sorted(needed - {f.name for f in files})
    if missing:
        raise KeyAccessError(f"the key files of CAs in the store are missing from {keys_dir}: {', '.join(missing)}",
                             reason="key_file_missing")
    config = settings.data_dir / CONFIG_FILE
    if config.is_file():
        _copy_secret(config, dest / CONFIG_FILE)
        files.append(dest / CONFIG_FILE)
    manifest = BackupManifest(
        format=BACKUP_FORMAT, created_at=utcnow(), source=copied.source, audit_records=copied.audit_records,
        tables=copied.tables,
        files=[BackupFile(path=f.relative_to(dest).as_posix(), sha256=_sha256(f), size=f.stat().st_size)
               for f in files],
        hsm_keys=[f"{ca.ca_id}: {ca.key_ref}" for ca in copied.ca_keys if ca.key_backend != "file"],
        kept_apart=[SECRETS_KEY_FILE] if (settings.data_dir / SECRETS_KEY_FILE).is_file() else [])
    create_secret(dest / MANIFEST, (manifest.model_dump_json(indent=2) + "\n").encode())
    return manifest


def read_manifest(src: Path) -> BackupManifest:
    """The backup's manifest, every file it lists checked against its SHA-256."""
    path = src / MANIFEST
    if not path.is_file():
        raise InvalidInput(f"{src} is not a complete otpki backup (no {MANIFEST})", reason="backup_incomplete")
    manifest = BackupManifest.model_validate(json.loads(path.read_text()))
    if manifest.format != BACKUP_FORMAT:
        raise InvalidInput(f"{src} is a backup of format {manifest.format}; this otpki reads format "
                           f"{BACKUP_FORMAT}", reason="backup_format")
    for f in manifest.files:
        target = (src / f.path).resolve()
        if src.resolve() not in target.parents or not target.is_file():
            raise InvalidInput(f"the backup lacks {f.path} (or names a file outside it)", reason="backup_damaged")
        if _sha256(target) != f.sha256:
            raise InvalidInput(f"{f.path} in {src} is not the file the backup took (SHA-256 differs)",
                               reason="backup_damaged")
    return manifest


def restore(src: Path, data_dir: Path, *, actor: str, store_url: str | None = None,
            crl_number_gap: int = DEFAULT_CRL_NUMBER_GAP,
            trust_version_gap: int = DEFAULT_TRUST_VERSION_GAP) -> RestoreResult:
    """Rebuild the empty (or new) data directory `data_dir` from the backup `src`."""
    if crl_number_gap < 1:
        raise InvalidInput("--crl-number-gap must be at least 1", reason="invalid_gap")
    if trust_version_gap < 1:
        raise InvalidInput("--trust-version-gap must be at least 1", reason="invalid_gap")
    src, data_dir = src.absolute(), data_dir.absolute()
    manifest = read_manifest(src)
    _empty_directory(data_dir, "the data directory")
    with _filled(data_dir, "the data directory"):
        return _restore(src, data_dir, manifest, actor=actor, store_url=store_url, crl_number_gap=crl_number_gap,
                        trust_version_gap=trust_version_gap)


def _restore(src: Path, data_dir: Path, manifest: BackupManifest, *, actor: str, store_url: str | None,
             crl_number_gap: int, trust_version_gap: int) -> RestoreResult:
    private_directory(data_dir)
    for f in manifest.files:
        if f.path == STORE_FILE:
            continue
        target = data_dir / f.path
        private_directory(target.parent)
        _copy_secret(src / f.path, target)
    if store_url is not None:
        _name_store(data_dir, store_url)
    settings = load_settings(data_dir, must_exist=False)
    url = store_url or settings.store_url
    with tempfile.TemporaryDirectory(prefix="otpki-restore-") as work:
        # A copy to read from: opening a SQLite file writes beside it (-wal, -shm), and a backup may be read-only.
        snapshot = Path(work) / STORE_FILE
        shutil.copyfile(src / STORE_FILE, snapshot)
        source = SqliteStore(snapshot)
        try:
            restored = open_store(url, busy_timeout_s=settings.file.store.busy_timeout_s)
            try:
                copied = copy_store(source, restored, source_name=f"backup {src} of {manifest.created_at.isoformat()}",
                                    target_name=describe_url(url), actor=actor, action="store.restore",
                                    crl_number_gap=crl_number_gap, trust_version_gap=trust_version_gap)
            finally:
                restored.close()
        finally:
            source.close()
    return RestoreResult(data_dir=str(data_dir), store=describe_url(url), copy_=copied, files=len(manifest.files),
                         to_copy=manifest.kept_apart)


def _name_store(data_dir: Path, url: str) -> None:
    """Name the store restored into (`--store`) in the restored otpki.toml: an instance started on the data
    directory must use it, not make itself a new, empty SQLite store because OTPKI_STORE_URL was not set. Without
    its password, which never goes into otpki.toml (~/.pgpass or PGPASSWORD)."""
    import tomllib

    import tomli_w

    path = data_dir / CONFIG_FILE
    data = tomllib.loads(path.read_text()) if path.is_file() else {}
    data.setdefault("store", {})["url"] = without_password(url)
    write_secret(path, ("# otpki configuration (restored; [store] url set by `otpki restore --store`): see the "
                        "README's 'Configuration' section\n" + tomli_w.dumps(data)).encode())


def without_password(url: str) -> str:
    """A PostgreSQL URL without its password (a SQLite URL as it is)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
