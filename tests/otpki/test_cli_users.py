"""`otpki users add|list|remove|reset-totp` and `otpki tokens create|list|revoke` (console and API access)."""

from __future__ import annotations

import json
from pathlib import Path

import pyotp
import pytest
from typer.testing import CliRunner

from otpki.cli.main import app
from otpki.config import load_settings
from otpki.runtime import open_engine
from trustlists.accounts import AccountPolicy

PASS = "a long enough test passphrase"
PASSWORD = "console password 1"


def run(d: Path, *args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, ["-d", str(d), *args], input=input,
                              env={"OTPKI_CA_PASSPHRASE": PASS, "OTPKI_ACTOR": "admin"})


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    cfg = tmp_path / "in.toml"
    cfg.write_text('[pki.root]\nkey_type = "ec-p384"\n')
    res = run(d, "init", "--config", str(cfg))
    assert res.exit_code == 0, res.output
    return d


def test_users_add_prints_the_totp_uri_and_a_qr_code_and_the_user_can_log_in(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = run(data_dir, "users", "add", "alice", "--role", "ca-admin", input=PASSWORD + "\n")
    assert res.exit_code == 0, res.output
    assert "otpauth://totp/otpki:alice?secret=" in res.stdout
    assert "\u2588" in res.stdout or "\u2580" in res.stdout or "\x1b[" in res.stdout  # the terminal QR code
    res = run(data_dir, "users", "reset-totp", "alice", "--json")
    secret = json.loads(res.stdout)["totp_secret"]
    res = run(data_dir, "users", "list", "--json")
    assert [(u["name"], u["role"]) for u in json.loads(res.stdout)] == [("alice", "ca-admin")]

    monkeypatch.setenv("OTPKI_CA_PASSPHRASE", PASS)
    eng = open_engine(load_settings(data_dir))
    try:
        eng.accounts.login("alice", PASSWORD, pyotp.TOTP(secret).now(), client="t", policy=AccountPolicy())
        adds = [r for r in eng.audit_records() if r.action.startswith("user.")]
        assert [(r.actor, r.action, r.subject) for r in adds] == [("admin", "user.add", "alice"),
                                                                   ("admin", "user.reset_totp", "alice")]
    finally:
        eng.close()
    assert run(data_dir, "users", "remove", "alice").exit_code == 0
    res = run(data_dir, "users", "remove", "alice")
    assert res.exit_code == 2 and "no console user 'alice'" in res.stderr


def test_users_add_refuses_a_bad_role_or_a_short_password_in_one_line(data_dir: Path) -> None:
    res = run(data_dir, "users", "add", "alice", "--role", "root", input=PASSWORD + "\n")
    assert res.exit_code == 2 and res.stderr.startswith("error: unknown role 'root'"), res.output
    res = run(data_dir, "users", "add", "alice", "--role", "viewer", input="short\n")
    assert res.exit_code == 2 and "at least 10 characters" in res.stderr and len(res.stderr.splitlines()) == 1


def test_tokens_are_printed_once_listed_without_the_token_and_revocable(data_dir: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    res = run(data_dir, "tokens", "create", "ci", "--role", "operator", "--json")
    assert res.exit_code == 0, res.output
    raw = json.loads(res.stdout)["token"]
    res = run(data_dir, "tokens", "list")
    assert "ci" in res.stdout and raw not in res.stdout
    res = run(data_dir, "tokens", "create", "admin-bot", "--role", "ca-admin")
    assert res.exit_code == 2 and "--user" in res.stderr
    assert run(data_dir, "tokens", "revoke", "ci").exit_code == 0
    monkeypatch.setenv("OTPKI_CA_PASSPHRASE", PASS)
    eng = open_engine(load_settings(data_dir))
    try:
        assert eng.accounts.token(raw) is None
    finally:
        eng.close()


def test_gds_hash_password_still_works() -> None:
    res = CliRunner().invoke(app, ["users", "hash-password"], input="s3cret-password\n")
    assert res.exit_code == 0 and res.stdout.startswith("$argon2id$")
