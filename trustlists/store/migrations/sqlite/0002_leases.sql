-- Leases (trustlists/leases.py): a named piece of work (one push target, the leader's singleton work) held by
-- one otpki instance until expires_ms, read from the store's clock (here the host's: one file, one host).
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    acquired_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
