-- Migration 1 (SQLite): the schema of otpki 0.1.0, the last release before versioned migrations.
-- IF NOT EXISTS throughout: applied to a data directory of that release (or of an earlier one that lacks some of
-- these tables), it adds what is missing and changes nothing that is there. ../postgresql/0001_initial.sql is the
-- same schema in PostgreSQL's types; every statement the engine runs is plain SQL that both accept.
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cas (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    parent_id TEXT REFERENCES cas(id),
    grp TEXT,
    site TEXT,
    key_type TEXT NOT NULL,
    key_backend TEXT NOT NULL,
    key_ref TEXT NOT NULL,
    cert_der BLOB NOT NULL,
    serial TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL UNIQUE,
    not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    active INTEGER NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS owners (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    grp TEXT NOT NULL,
    site TEXT,
    application_uri TEXT,
    dns_names TEXT NOT NULL,
    ip_addresses TEXT NOT NULL,
    attributes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (grp, name),
    UNIQUE (grp, application_uri)
);
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY,
    issuer_ca_id TEXT NOT NULL REFERENCES cas(id),
    owner_id TEXT REFERENCES owners(id),
    grp TEXT NOT NULL,
    site TEXT,
    subject TEXT NOT NULL,
    san_uri TEXT,
    key_type TEXT NOT NULL,
    not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    issuance TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    delivered INTEGER NOT NULL,
    superseded_by TEXT,
    revoked_at BIGINT,
    revocation_reason INTEGER,
    der BLOB NOT NULL
);
-- Covering index for "what expires soon": the alerting query reads no table page at all.
CREATE INDEX IF NOT EXISTS certificates_expiry
    ON certificates (not_after, revoked_at, superseded_by, serial, subject, grp, site, owner_id, delivered);
CREATE INDEX IF NOT EXISTS certificates_owner ON certificates (owner_id);
CREATE INDEX IF NOT EXISTS certificates_group ON certificates (grp, not_after);
-- The key each certificate certifies (SHA-256 of its SubjectPublicKeyInfo), written with the certificate:
-- a re-run batch finds the certificate it already issued for a CSR's key here. Its own table so data
-- directories from before it keep working; their certificates are indexed once (trustlists/key_index.py).
CREATE TABLE IF NOT EXISTS certificate_keys (
    serial TEXT PRIMARY KEY REFERENCES certificates(serial),
    spki_sha256 TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS certificate_keys_spki ON certificate_keys (spki_sha256);
CREATE TABLE IF NOT EXISTS revocations (
    seq INTEGER PRIMARY KEY,
    serial TEXT NOT NULL,
    issuer_ca_id TEXT NOT NULL REFERENCES cas(id),
    revoked_at BIGINT NOT NULL,
    reason INTEGER NOT NULL,
    not_after BIGINT NOT NULL,
    UNIQUE (issuer_ca_id, serial)
);
-- Covering index for CRL generation: a million entries come straight off the index, no row lookups.
CREATE INDEX IF NOT EXISTS revocations_crl ON revocations (issuer_ca_id, not_after, serial, revoked_at, reason);
CREATE TABLE IF NOT EXISTS crls (
    ca_id TEXT NOT NULL REFERENCES cas(id),
    crl_number BIGINT NOT NULL,
    this_update BIGINT NOT NULL,
    next_update BIGINT NOT NULL,
    entries INTEGER NOT NULL,
    der BLOB NOT NULL,
    PRIMARY KEY (ca_id, crl_number)
);
CREATE TABLE IF NOT EXISTS trust_external (
    id INTEGER PRIMARY KEY,
    grp TEXT NOT NULL,
    list TEXT NOT NULL,
    kind TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    der BLOB NOT NULL,
    note TEXT NOT NULL,
    added_at BIGINT NOT NULL,
    removed_at BIGINT
);
CREATE INDEX IF NOT EXISTS trust_external_group ON trust_external (grp, removed_at);
CREATE TABLE IF NOT EXISTS trust_versions (
    grp TEXT NOT NULL,
    version BIGINT NOT NULL,
    content_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (grp, version)
);
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY,
    at_us BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
-- Certificate requests waiting for (or past) approval. Never holds a private key or a key password: only
-- the CSR (public) or the parameters of a server-generated key (see trustlists/requests.py).
CREATE TABLE IF NOT EXISTS cert_requests (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    owner_id TEXT NOT NULL REFERENCES owners(id),
    grp TEXT NOT NULL,
    site TEXT,
    status TEXT NOT NULL,
    csr BLOB,
    key_type TEXT,
    key_format TEXT,
    has_password INTEGER NOT NULL,
    subject_name TEXT,
    dns_names TEXT,
    ip_addresses TEXT,
    requester_fingerprint TEXT,
    submitted_by TEXT NOT NULL,
    submitted_at BIGINT NOT NULL,
    decided_by TEXT,
    decided_at BIGINT,
    reason TEXT,
    serial TEXT REFERENCES certificates(serial),
    issued_at BIGINT
);
CREATE INDEX IF NOT EXISTS cert_requests_status ON cert_requests (status, grp);
-- Where the engine delivers certificates and trust lists itself (push): PLCs, brokers. The address and
-- the credentials reference are opaque to the engine; the protocol front knows what they mean.
CREATE TABLE IF NOT EXISTS delivery_targets (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL REFERENCES owners(id),
    kind TEXT NOT NULL,
    address TEXT NOT NULL,
    credentials_ref TEXT NOT NULL,
    grp TEXT NOT NULL,
    site TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT,
    delivered_serial TEXT,
    delivered_trust_version BIGINT,
    updated_at BIGINT NOT NULL,
    UNIQUE (kind, address)
);
CREATE INDEX IF NOT EXISTS delivery_targets_due ON delivery_targets (state, next_attempt_at);
-- The certificate a delivery target must present while it holds no engine-issued certificate (a PLC with its
-- factory self-signed one): pinned at registration, at the first contact (trust on first use) or by an operator.
-- Released in the transaction that records the first delivered engine certificate; from then on only the owner's
-- engine certificates identify the target (trustlists/targets.py). Its own table: existing stores keep working.
CREATE TABLE IF NOT EXISTS delivery_target_pins (
    target_id TEXT PRIMARY KEY REFERENCES delivery_targets(id),
    fingerprint TEXT NOT NULL,
    source TEXT NOT NULL,
    pinned_at BIGINT NOT NULL,
    pinned_by TEXT NOT NULL
);
-- The bootstrap certificate (IDevID) each device first enrolled with (trustlists/bootstrap.py): one per device,
-- and one device per certificate. Set in the transaction that records the first operational certificate.
CREATE TABLE IF NOT EXISTS bootstrap_pins (
    owner_id TEXT PRIMARY KEY REFERENCES owners(id),
    grp TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    subject TEXT NOT NULL,
    issuer TEXT NOT NULL,
    not_after BIGINT NOT NULL,
    serial TEXT NOT NULL,
    pinned_at BIGINT NOT NULL,
    pinned_by TEXT NOT NULL,
    UNIQUE (grp, fingerprint)
);
-- Every pin set and released, in order: lets each process keep an in-memory copy of the pins current with an
-- incremental read (the brokers ask about live bootstrap sessions on their event loop, where no query may run).
CREATE TABLE IF NOT EXISTS bootstrap_pin_changes (
    seq INTEGER PRIMARY KEY,
    owner_id TEXT NOT NULL,
    fingerprint TEXT
);
-- Request ids seen by a protocol front (trustlists/request_guard.py), until their timestamp window has passed:
-- shared by every service and process on this store, and kept across restarts.
CREATE TABLE IF NOT EXISTS seen_requests (
    scope TEXT NOT NULL,
    subject TEXT NOT NULL,
    request_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (scope, subject, request_id)
);
CREATE INDEX IF NOT EXISTS seen_requests_expiry ON seen_requests (expires_at);
-- Token buckets of the shared rate limit; a missing row is a full bucket, so rows of idle subjects are dropped.
CREATE TABLE IF NOT EXISTS rate_buckets (
    scope TEXT NOT NULL,
    subject TEXT NOT NULL,
    tokens REAL NOT NULL,
    stamp_us BIGINT NOT NULL,
    full_at BIGINT NOT NULL,
    PRIMARY KEY (scope, subject)
);
CREATE INDEX IF NOT EXISTS rate_buckets_idle ON rate_buckets (full_at);
