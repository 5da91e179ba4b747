-- The queue moves out of `deliveries` (BENCHMARKS.md, item 23). Indexed on `status`, every
-- step of every delivery changed an indexed column; on PostgreSQL each such update writes a
-- new entry into every index of the table (here: five of them, twice per message), and that
-- was most of the server's work per message. Now:
--   delivery_queue  a row per delivery waiting to be sent: inserted when it is queued,
--                   deleted when a worker claims it;
--   claims          a row per claim a worker holds (its lease, its deliveries), deleted when
--                   the last of its outcomes is recorded, or when the lease expires and its
--                   unfinished deliveries go back into the queue;
--   deliveries      each message's record; no index covers a column that changes as a message
--                   is sent, so PostgreSQL updates its rows in place (HOT).
-- The same schema on both backends keeps one set of statements.
CREATE TABLE delivery_queue (
    delivery_id TEXT PRIMARY KEY REFERENCES deliveries (id) ON DELETE CASCADE,
    digest_id   TEXT,
    run_at      INTEGER NOT NULL
);
-- A delivery being sent when this migration ran is due again when its lease would have
-- expired, as it would have been before.
INSERT INTO delivery_queue (delivery_id, digest_id, run_at)
SELECT id, digest_id, CASE WHEN status = 'sending' THEN COALESCE(lease_until, run_at) ELSE run_at END
FROM deliveries WHERE status IN ('queued', 'sending');
UPDATE deliveries SET status = 'queued', claim_id = NULL WHERE status = 'sending';
CREATE INDEX delivery_queue_due ON delivery_queue (run_at);
CREATE INDEX delivery_queue_digest ON delivery_queue (digest_id);

CREATE TABLE claims (
    id          TEXT PRIMARY KEY,
    lease_until INTEGER NOT NULL,
    -- The claimed delivery ids, a JSON array: where to look when the lease expires.
    deliveries  TEXT NOT NULL,
    -- Claimed deliveries whose outcome is not recorded yet.
    remaining   INTEGER NOT NULL
);
CREATE INDEX claims_lease ON claims (lease_until);
-- The digests a claim holds deliveries of: a digest is sent when none is queued or claimed.
CREATE TABLE claim_digests (
    digest_id TEXT NOT NULL,
    claim_id  TEXT NOT NULL REFERENCES claims (id) ON DELETE CASCADE,
    PRIMARY KEY (digest_id, claim_id)
);

-- Messages sent per minute, counted as outcomes are recorded: an index on `sent_at` would be
-- an index on a column every sent message changes.
CREATE TABLE sent_per_minute (
    minute INTEGER PRIMARY KEY,
    sent   INTEGER NOT NULL
);
INSERT INTO sent_per_minute (minute, sent)
SELECT sent_at / 60000, COUNT(*) FROM deliveries
WHERE status = 'sent' AND sent_at IS NOT NULL GROUP BY sent_at / 60000;

-- When a delivery failed for good: set once, so no other update touches its index.
ALTER TABLE deliveries ADD COLUMN failed_at INTEGER;
UPDATE deliveries SET failed_at = updated_at WHERE status = 'failed';

DROP INDEX deliveries_due;
DROP INDEX deliveries_lease;
DROP INDEX deliveries_sent_at;
DROP INDEX deliveries_failed;
DROP INDEX deliveries_unfinished;
CREATE INDEX deliveries_failed ON deliveries (failed_at) WHERE failed_at IS NOT NULL;
-- In the queue and in the claim now.
ALTER TABLE deliveries DROP COLUMN run_at;
ALTER TABLE deliveries DROP COLUMN lease_until;
