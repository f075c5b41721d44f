-- A device polling its own EST request (202 until decided, RFC 7030 4.2.3) looks its requests up by owner: one
-- indexed read per poll instead of a scan of every request the store has ever held.
CREATE INDEX IF NOT EXISTS cert_requests_owner ON cert_requests (owner_id);
