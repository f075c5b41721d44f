-- The bootstrap allow-lists of the registrations (Owner.attributes["bootstrap"]) as an index: who lists a bootstrap
-- certificate is one indexed lookup by (group, CN or fingerprint) when a device authenticates with it (EST, MQTT),
-- instead of a read of every owner of the group. Kept by the store's owner writes (insert/update), in the same
-- transaction; derived data: the attributes stay the record, and the engine checks every match against them.
CREATE TABLE IF NOT EXISTS bootstrap_allowlist (
    grp TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL CHECK (kind IN ('subject_cn', 'sha256')),
    value TEXT COLLATE "C" NOT NULL,
    owner_id TEXT COLLATE "C" NOT NULL REFERENCES owners(id),
    PRIMARY KEY (grp, kind, value, owner_id)
);
CREATE INDEX IF NOT EXISTS bootstrap_allowlist_owner ON bootstrap_allowlist (owner_id);
-- The registrations made before this migration. Fingerprints as the engine compares them (lower case, no colons).
INSERT INTO bootstrap_allowlist (grp, kind, value, owner_id)
SELECT o.grp, e.kind, e.value, o.id
FROM owners o
CROSS JOIN LATERAL jsonb_array_elements(
    CASE WHEN jsonb_typeof(o.attributes::jsonb -> 'bootstrap') = 'array' THEN o.attributes::jsonb -> 'bootstrap'
         ELSE '[]'::jsonb END) AS entry
CROSS JOIN LATERAL (
    SELECT 'sha256' AS kind, lower(replace(btrim(entry ->> 'sha256'), ':', '')) AS value
    WHERE jsonb_typeof(entry -> 'sha256') = 'string'
    UNION ALL
    SELECT 'subject_cn', entry ->> 'subject_cn' WHERE jsonb_typeof(entry -> 'subject_cn') = 'string'
) AS e
ON CONFLICT DO NOTHING;
