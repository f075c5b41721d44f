"""Console users, TOTP, sessions, lockout and API tokens (trustlists/accounts.py), on both stores."""

from __future__ import annotations

import base64
from datetime import timedelta

import pyotp
import pytest

from trustlists.accounts import AccountPolicy, LoginRefused, Role, hash_secret
from trustlists.engine import Engine
from trustlists.errors import AlreadyExists, InvalidInput, NotFound
from trustlists.secret_box import KEY_FILE, SecretKeyError
from trustlists.testing import Clock, make_engine

STORE_BACKENDS = ("sqlite", "postgresql")
PASSWORD = "correct horse battery"
POLICY = AccountPolicy(user_failures=3, address_failures=5, failure_window_s=600, lockout_s=900)


def code(secret: str, clock: Clock, steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(clock.now + timedelta(seconds=30 * steps))


def actions(engine: Engine) -> list[str]:
    return [r.action for r in engine.audit_records()]


def test_user_logs_in_with_password_then_totp_and_the_session_is_shared_by_the_store(engine: Engine,
                                                                                    clock: Clock) -> None:
    creds = engine.accounts.add_user("alice", "ca-admin", PASSWORD, actor="root")
    assert creds.provisioning_uri.startswith("otpauth://totp/otpki:alice?secret=")
    assert [u.name for u in engine.accounts.list_users()] == ["alice"]
    session_id, pending = engine.accounts.login_password("alice", PASSWORD, client="10.0.0.1", policy=POLICY)
    assert not pending.complete
    first_id = session_id
    session_id, done = engine.accounts.login_totp(session_id, code(creds.totp_secret, clock), client="10.0.0.1",
                                                  policy=POLICY)
    assert done.complete and done.user.role is Role.CA_ADMIN
    # A new id and CSRF token once logged in: what was handed out before the second factor is worth nothing.
    assert session_id != first_id and done.csrf_token != pending.csrf_token
    assert engine.accounts.session(first_id) is None
    found = engine.accounts.session(session_id)
    assert found is not None and found.complete
    assert engine.accounts.session(session_id + "x") is None
    engine.accounts.logout(session_id)
    assert engine.accounts.session(session_id) is None
    assert actions(engine)[-3:] == ["user.add", "console.login", "console.logout"]


def test_the_store_never_holds_a_session_id_or_token_in_clear(engine: Engine, clock: Clock, tmp_path) -> None:
    creds = engine.accounts.add_user("alice", "viewer", PASSWORD, actor="root")
    session_id, _ = engine.accounts.login("alice", PASSWORD, code(creds.totp_secret, clock), client="a",
                                          policy=POLICY)
    raw, _ = engine.accounts.create_token("ci", "operator", actor="root")
    if (tmp_path / "otpki.db").exists():
        data = (tmp_path / "otpki.db").read_bytes() + (tmp_path / "otpki.db-wal").read_bytes()
        assert session_id.encode() not in data and raw.encode() not in data
        assert hash_secret(session_id).encode() in data
    assert engine.accounts.token(raw) is not None


def test_the_store_holds_totp_secrets_sealed(engine: Engine, clock: Clock, tmp_path) -> None:
    """An attacker with a copy of the store (a dump, the db file) finds no TOTP secret in it; one who moves a sealed
    secret to another user's row, or alters it, gets a refusal, never a login."""
    alice = engine.accounts.add_user("alice", "ca-admin", PASSWORD, actor="root")
    bob = engine.accounts.add_user("bob", "viewer", PASSWORD, actor="root")
    store = engine._ctx.store
    with store.read() as tx:
        rows = {name: tx.get_web_user(name) for name in ("alice", "bob")}
    for name, creds in (("alice", alice), ("bob", bob)):
        row = rows[name]
        assert row is not None and row.totp_secret.startswith("v1:")
        assert creds.totp_secret not in row.totp_secret
        assert creds.totp_secret.encode() not in base64.b64decode(row.totp_secret.split(":")[2])
    if (tmp_path / "otpki.db").exists():
        data = b"".join(p.read_bytes() for p in tmp_path.glob("otpki.db*"))
        assert alice.totp_secret.encode() not in data and bob.totp_secret.encode() not in data
    key_file = tmp_path / KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(key_file.read_bytes()) == 32
    engine.accounts.check_totp("alice", code(alice.totp_secret, clock), client="a", policy=POLICY)

    # Bob's sealed secret copied into Alice's row (an attacker with write access to the store) does not open.
    with store.transaction() as tx:
        assert rows["bob"] is not None
        tx.set_web_user_totp("alice", rows["bob"].totp_secret)
    clock.now += timedelta(seconds=30)
    with pytest.raises(SecretKeyError, match="does not open"):
        engine.accounts.check_totp("alice", code(bob.totp_secret, clock), client="a", policy=POLICY)


def test_a_missing_secrets_key_file_is_a_clear_refusal(engine: Engine, clock: Clock, tmp_path,
                                                       store_url: str | None) -> None:
    creds = engine.accounts.add_user("alice", "ca-admin", PASSWORD, actor="root")
    (tmp_path / KEY_FILE).unlink()  # lost, or an instance on the same store never given a copy
    other = make_engine(tmp_path, clock=clock, store_url=store_url)
    try:
        with pytest.raises(SecretKeyError, match="is missing"):
            other.accounts.check_totp("alice", code(creds.totp_secret, clock), client="a", policy=POLICY)
    finally:
        other.close()


def test_a_totp_code_is_accepted_once(engine: Engine, clock: Clock) -> None:
    creds = engine.accounts.add_user("alice", "ca-admin", PASSWORD, actor="root")
    now_code = code(creds.totp_secret, clock)
    engine.accounts.check_totp("alice", now_code, client="a", policy=POLICY)
    with pytest.raises(LoginRefused) as refused:
        engine.accounts.check_totp("alice", now_code, client="a", policy=POLICY)
    assert refused.value.reason == "totp_replayed"
    # An older step (the previous code, still inside the skew window) is refused too: steps only go forward.
    with pytest.raises(LoginRefused) as refused:
        engine.accounts.check_totp("alice", code(creds.totp_secret, clock, -1), client="a", policy=POLICY)
    assert refused.value.reason == "totp_replayed"
    clock.now += timedelta(seconds=30)
    engine.accounts.check_totp("alice", code(creds.totp_secret, clock), client="a", policy=POLICY)
    assert "console.totp_replayed" in actions(engine)


def test_wrong_codes_and_passwords_lock_the_user_out_also_for_the_right_password(engine: Engine,
                                                                                  clock: Clock) -> None:
    creds = engine.accounts.add_user("alice", "operator", PASSWORD, actor="root")
    with pytest.raises(LoginRefused) as refused:
        engine.accounts.login_password("alice", "wrong password!", client="a", policy=POLICY)
    assert refused.value.reason == "bad_credentials"
    with pytest.raises(LoginRefused) as refused:
        engine.accounts.check_totp("alice", "000000" if code(creds.totp_secret, clock) != "000000" else "111111",
                                   client="b", policy=POLICY)
    assert refused.value.reason == "totp_invalid"
    with pytest.raises(LoginRefused):
        engine.accounts.login_password("alice", "wrong again!!", client="c", policy=POLICY)
    with pytest.raises(LoginRefused) as refused:
        engine.accounts.login_password("alice", PASSWORD, client="d", policy=POLICY)
    assert refused.value.reason == "locked_out"
    assert "console.locked_out" in actions(engine)
    clock.now += timedelta(seconds=POLICY.lockout_s + 1)
    engine.accounts.login_password("alice", PASSWORD, client="d", policy=POLICY)


def test_one_address_guessing_many_users_is_locked_out(engine: Engine) -> None:
    engine.accounts.add_user("alice", "operator", PASSWORD, actor="root")
    for n in range(POLICY.address_failures):
        with pytest.raises(LoginRefused) as refused:
            engine.accounts.login_password(f"guess{n}", "whatever password", client="10.9.9.9", policy=POLICY)
        assert refused.value.reason == "bad_credentials"
    with pytest.raises(LoginRefused) as refused:
        engine.accounts.login_password("alice", PASSWORD, client="10.9.9.9", policy=POLICY)
    assert refused.value.reason == "locked_out"
    engine.accounts.login_password("alice", PASSWORD, client="10.0.0.1", policy=POLICY)


def test_login_attempts_of_one_address_are_rate_limited_right_or_wrong(engine: Engine, clock: Clock) -> None:
    engine.accounts.add_user("alice", "operator", PASSWORD, actor="root")
    policy = POLICY.model_copy(update={"login_burst": 2, "login_per_minute": 1.0})
    engine.accounts.login_password("alice", PASSWORD, client="10.1.1.1", policy=policy)
    with pytest.raises(LoginRefused):
        engine.accounts.login_password("alice", "wrong password", client="10.1.1.1", policy=policy)
    with pytest.raises(LoginRefused) as refused:
        engine.accounts.login_password("alice", PASSWORD, client="10.1.1.1", policy=policy)
    assert refused.value.reason == "rate_limited"
    engine.accounts.login_password("alice", PASSWORD, client="10.2.2.2", policy=policy)  # another address
    clock.now += timedelta(seconds=61)
    engine.accounts.login_password("alice", PASSWORD, client="10.1.1.1", policy=policy)


def test_login_step_two_needs_a_fresh_step_one(engine: Engine, clock: Clock) -> None:
    creds = engine.accounts.add_user("alice", "operator", PASSWORD, actor="root")
    session_id, _ = engine.accounts.login_password("alice", PASSWORD, client="a", policy=POLICY)
    clock.now += timedelta(seconds=POLICY.login_ttl_s + 1)
    with pytest.raises(LoginRefused) as refused:
        engine.accounts.login_totp(session_id, code(creds.totp_secret, clock), client="a", policy=POLICY)
    assert refused.value.reason == "session_invalid"
    # A half-done login is no session.
    assert engine.accounts.session(session_id) is None


def test_reset_totp_and_remove_end_the_users_sessions(engine: Engine, clock: Clock) -> None:
    creds = engine.accounts.add_user("alice", "operator", PASSWORD, actor="root")
    session_id, _ = engine.accounts.login("alice", PASSWORD, code(creds.totp_secret, clock), client="a",
                                          policy=POLICY)
    fresh = engine.accounts.reset_totp("alice", actor="root")
    assert fresh.totp_secret != creds.totp_secret
    assert engine.accounts.session(session_id) is None
    clock.now += timedelta(seconds=30)
    session_id, _ = engine.accounts.login("alice", PASSWORD, code(fresh.totp_secret, clock), client="a",
                                          policy=POLICY)
    engine.accounts.remove_user("alice", actor="root")
    assert engine.accounts.session(session_id) is None
    with pytest.raises(NotFound):
        engine.accounts.remove_user("alice", actor="root")
    assert {"user.reset_totp", "user.remove"} <= set(actions(engine))


def test_user_input_is_checked(engine: Engine) -> None:
    with pytest.raises(InvalidInput) as bad:
        engine.accounts.add_user("alice", "root", PASSWORD, actor="root")
    assert bad.value.reason == "unknown_role"
    with pytest.raises(InvalidInput) as bad:
        engine.accounts.add_user("alice", "viewer", "short", actor="root")
    assert bad.value.reason == "password_too_short"
    with pytest.raises(InvalidInput) as bad:
        engine.accounts.add_user("<script>", "viewer", PASSWORD, actor="root")
    assert bad.value.reason == "user_name_invalid"
    engine.accounts.add_user("alice", "viewer", PASSWORD, actor="root")
    with pytest.raises(AlreadyExists):
        engine.accounts.add_user("alice", "viewer", PASSWORD, actor="root")


def test_api_tokens_are_shown_once_and_revocable(engine: Engine) -> None:
    engine.accounts.add_user("alice", "ca-admin", PASSWORD, actor="root")
    with pytest.raises(InvalidInput) as bad:
        engine.accounts.create_token("robot", "ca-admin", actor="root")
    assert bad.value.reason == "token_needs_user"
    raw, token = engine.accounts.create_token("robot", "ca-admin", user="alice", actor="root")
    assert token.role is Role.CA_ADMIN
    found = engine.accounts.token(raw)
    assert found is not None and found.user_name == "alice"
    assert engine.accounts.token(raw[:-1]) is None
    with pytest.raises(AlreadyExists):
        engine.accounts.create_token("robot", "viewer", actor="root")
    engine.accounts.revoke_token("robot", actor="root")
    assert engine.accounts.token(raw) is None
    assert [t.revoked for t in engine.accounts.list_tokens()] == [True]
    with pytest.raises(NotFound):
        engine.accounts.revoke_token("robot", actor="root")
    assert {"token.create", "token.revoke"} <= set(actions(engine))


def test_roles_are_ordered() -> None:
    assert Role.CA_ADMIN.allows(Role.OPERATOR) and Role.OPERATOR.allows(Role.VIEWER)
    assert not Role.VIEWER.allows(Role.OPERATOR) and not Role.OPERATOR.allows(Role.CA_ADMIN)
