-- Leases (trustlists/leases.py): a named piece of work (one push target, the leader's singleton work) held by
-- one otpki instance until expires_ms, read from the database server's clock so that host clocks do not matter.
CREATE TABLE IF NOT EXISTS leases (
    name TEXT COLLATE "C" PRIMARY KEY,
    holder TEXT COLLATE "C" NOT NULL,
    acquired_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
