"""The key sealing the console users' TOTP secrets is a secret in clear: a backup names it instead of taking it,
a restore says to copy it, and with it copied the restored users log in with the authenticator they have."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyotp
import pytest

from otpki.config import load_settings
from otpki.runtime import open_engine
from trustlists.accounts import AccountPolicy
from trustlists.errors import KeyAccessError
from trustlists.secret_box import KEY_FILE
from trustlists.testing import PASSPHRASE

ROOT = Path(__file__).resolve().parents[2]


def otpki(data_dir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OTPKI_DATA_DIR": str(data_dir), "OTPKI_CA_PASSPHRASE": PASSPHRASE.decode(),
           "COLUMNS": "400"}
    res = subprocess.run([sys.executable, "-m", "otpki.cli.main", *args], env=env, capture_output=True, text=True,
                         timeout=180, check=False, cwd=ROOT, input=stdin)
    assert res.returncode == 0, (args, res.stdout, res.stderr)
    return res


def test_a_backup_names_the_console_secrets_key_and_a_restore_says_to_copy_it(tmp_path: Path) -> None:
    plant, backup_dir, fresh = tmp_path / "plant", tmp_path / "backup", tmp_path / "fresh"
    otpki(plant, "init")
    added = json.loads(otpki(plant, "users", "add", "alice", "--role", "ca-admin", "--json",
                             stdin="correct horse battery staple\n").stdout)

    taken = otpki(plant, "backup", str(backup_dir))
    assert f"not in the backup: {KEY_FILE}" in taken.stdout
    assert not (backup_dir / KEY_FILE).exists()
    secret = (plant / KEY_FILE).read_bytes()
    assert all(secret not in f.read_bytes() for f in backup_dir.rglob("*") if f.is_file())
    assert json.loads((backup_dir / "manifest.json").read_text())["kept_apart"] == [KEY_FILE]

    restored = otpki(fresh, "restore", str(backup_dir))
    assert f"copy {KEY_FILE} from the old data directory" in restored.stdout
    assert "otpki users reset-totp" in restored.stdout

    engine = open_engine(load_settings(fresh))
    try:
        totp = pyotp.TOTP(added["totp_secret"])
        with pytest.raises(KeyAccessError):  # without the key the sealed secret cannot be opened
            engine.accounts.check_totp("alice", totp.now(), client="test", policy=AccountPolicy())
    finally:
        engine.close()
    (fresh / KEY_FILE).write_bytes(secret)
    (fresh / KEY_FILE).chmod(0o600)
    engine = open_engine(load_settings(fresh))
    try:
        engine.accounts.check_totp("alice", totp.now(), client="test", policy=AccountPolicy())  # logs in
    finally:
        engine.close()
