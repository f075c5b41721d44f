-- Certificates counted per group, site, stored state and expiry day (trustlists/store/tallies.py): the plant
-- overview's counts and expiry chart read these few rows, not a million certificates. Kept by the store's
-- certificate writes in the same transaction; derived data (a copy carries it; the certificates stay the record).
-- site: '' for none (a key column; NULLs would not meet in the primary key). state: what is stored (revoked,
-- superseded, issued-not-delivered, active): "expired" depends on the clock and is derived when read. day: the UTC
-- day of not_after, floor(not_after / 86400). shard: the writing connection (the backend pid here; 0 on SQLite),
-- so concurrent writers never wait on one counter row; a read sums the shards.
CREATE TABLE IF NOT EXISTS certificate_tallies (
    grp TEXT COLLATE "C" NOT NULL,
    site TEXT COLLATE "C" NOT NULL,
    state TEXT COLLATE "C" NOT NULL,
    day BIGINT NOT NULL,
    shard BIGINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (grp, site, state, day, shard)
);
-- The certificates already there.
INSERT INTO certificate_tallies (grp, site, state, day, shard, n)
SELECT grp, COALESCE(site, ''),
       CASE WHEN revoked_at IS NOT NULL THEN 'revoked' WHEN superseded_by IS NOT NULL THEN 'superseded'
            WHEN delivered = 0 THEN 'issued-not-delivered' ELSE 'active' END,
       CASE WHEN not_after >= 0 THEN not_after / 86400 ELSE -((86399 - not_after) / 86400) END, 0, COUNT(*)
FROM certificates GROUP BY 1, 2, 3, 4;
-- When each MQTT device was last seen on a broker (the console's Devices page and /api/v1/devices): written by the
-- broker's part at connect and disconnect and at most once a minute per connected device, so it survives a restart
-- and every instance on the store shows the same. device: the owner's name in group grp (what its identity carries).
CREATE TABLE IF NOT EXISTS device_presence (
    grp TEXT COLLATE "C" NOT NULL,
    device TEXT COLLATE "C" NOT NULL,
    last_seen BIGINT NOT NULL,
    PRIMARY KEY (grp, device)
);
