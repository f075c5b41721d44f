-- Console and REST API users (trustlists/accounts.py): argon2id password hashes, the TOTP secret and the last time
-- step a code was accepted for (a code is never accepted twice).
CREATE TABLE IF NOT EXISTS web_users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    totp_secret TEXT NOT NULL,
    totp_last_step INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
-- Server-side console sessions, shared by every instance on the store. Only the SHA-256 of the session id is kept:
-- a copy of the store does not let anyone act as a logged-in user.
CREATE TABLE IF NOT EXISTS web_sessions (
    id_sha256 TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    stage TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS web_sessions_user ON web_sessions (user_name);
CREATE INDEX IF NOT EXISTS web_sessions_expiry ON web_sessions (expires_at);
-- API tokens: shown once by `otpki tokens create`, kept as the SHA-256 of the token.
CREATE TABLE IF NOT EXISTS web_tokens (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    user_name TEXT,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
-- Failed logins per user ('user:NAME') and per client address ('addr:IP'): the lockout every instance applies.
CREATE TABLE IF NOT EXISTS web_login_failures (
    subject TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    window_start INTEGER NOT NULL,
    locked_until INTEGER NOT NULL
);
-- A certificate's (or user's) history on the console: the audit records about one subject.
CREATE INDEX IF NOT EXISTS audit_log_subject ON audit_log (subject, seq);
