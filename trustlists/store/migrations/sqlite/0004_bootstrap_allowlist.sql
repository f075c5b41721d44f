-- The bootstrap allow-lists of the registrations (Owner.attributes["bootstrap"]) as an index: who lists a bootstrap
-- certificate is one indexed lookup by (group, CN or fingerprint) when a device authenticates with it (EST, MQTT),
-- instead of a read of every owner of the group. Kept by the store's owner writes (insert/update), in the same
-- transaction; derived data: the attributes stay the record, and the engine checks every match against them.
CREATE TABLE IF NOT EXISTS bootstrap_allowlist (
    grp TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('subject_cn', 'sha256')),
    value TEXT NOT NULL,
    owner_id TEXT NOT NULL REFERENCES owners(id),
    PRIMARY KEY (grp, kind, value, owner_id)
);
CREATE INDEX IF NOT EXISTS bootstrap_allowlist_owner ON bootstrap_allowlist (owner_id);
-- The registrations made before this migration. Fingerprints as the engine compares them (lower case, no colons);
-- elements that are not objects are no entries (CASE: json_type would read a bare string element as bad JSON).
INSERT OR IGNORE INTO bootstrap_allowlist (grp, kind, value, owner_id)
SELECT o.grp, 'sha256', lower(replace(trim(json_extract(e.value, '$.sha256')), ':', '')), o.id
FROM owners o, json_each(o.attributes, '$.bootstrap') e
WHERE json_type(o.attributes, '$.bootstrap') = 'array' AND CASE WHEN e.type = 'object' THEN json_type(e.value, '$.sha256') END = 'text';
INSERT OR IGNORE INTO bootstrap_allowlist (grp, kind, value, owner_id)
SELECT o.grp, 'subject_cn', json_extract(e.value, '$.subject_cn'), o.id
FROM owners o, json_each(o.attributes, '$.bootstrap') e
WHERE json_type(o.attributes, '$.bootstrap') = 'array' AND CASE WHEN e.type = 'object' THEN json_type(e.value, '$.subject_cn') END = 'text';
