-- Console and REST API users (trustlists/accounts.py): argon2id password hashes, the TOTP secret and the last time
-- step a code was accepted for (a code is never accepted twice).
CREATE TABLE IF NOT EXISTS web_users (
    name TEXT COLLATE "C" PRIMARY KEY,
    role TEXT COLLATE "C" NOT NULL,
    password_hash TEXT COLLATE "C" NOT NULL,
    totp_secret TEXT COLLATE "C" NOT NULL,
    totp_last_step BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
-- Server-side console sessions, shared by every instance on the store. Only the SHA-256 of the session id is kept:
-- a copy of the store does not let anyone act as a logged-in user.
CREATE TABLE IF NOT EXISTS web_sessions (
    id_sha256 TEXT COLLATE "C" PRIMARY KEY,
    user_name TEXT COLLATE "C" NOT NULL,
    csrf_token TEXT COLLATE "C" NOT NULL,
    stage TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS web_sessions_user ON web_sessions (user_name);
CREATE INDEX IF NOT EXISTS web_sessions_expiry ON web_sessions (expires_at);
-- API tokens: shown once by `otpki tokens create`, kept as the SHA-256 of the token.
CREATE TABLE IF NOT EXISTS web_tokens (
    name TEXT COLLATE "C" PRIMARY KEY,
    role TEXT COLLATE "C" NOT NULL,
    user_name TEXT COLLATE "C",
    token_sha256 TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
-- Failed logins per user ('user:NAME') and per client address ('addr:IP'): the lockout every instance applies.
CREATE TABLE IF NOT EXISTS web_login_failures (
    subject TEXT COLLATE "C" PRIMARY KEY,
    failures INTEGER NOT NULL,
    window_start BIGINT NOT NULL,
    locked_until BIGINT NOT NULL
);
-- A certificate's (or user's) history on the console: the audit records about one subject.
CREATE INDEX IF NOT EXISTS audit_log_subject ON audit_log (subject, seq);
