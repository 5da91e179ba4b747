-- Retention (issue 23, `delivery_retention`): a delivery's own record is deleted once it is
-- older than the retention; what the statistics read of it is kept here first.
--
-- A finished digest (sent, cancelled, missed; nothing of it queued or claimed) is rolled up
-- once: its counts by state, its first and last send, its latency percentiles and its
-- reply codes, and each wave's sent count. From then on its statistics read the roll-up,
-- whether its deliveries are still there or not, so they never change as rows are deleted
-- and never grow with the history. `rolled_up_at`: when; `pruned_at`: when its last
-- delivery was deleted.
CREATE TABLE delivery_rollups (
    digest_id      TEXT PRIMARY KEY REFERENCES digests (id) ON DELETE CASCADE,
    sent           BIGINT NOT NULL,
    failed         BIGINT NOT NULL,
    bounced        BIGINT NOT NULL,
    suppressed     BIGINT NOT NULL,
    first_sent_at  BIGINT,
    last_sent_at   BIGINT,
    latency_p50_ms BIGINT,
    latency_p95_ms BIGINT,
    rolled_up_at   BIGINT NOT NULL
);
CREATE TABLE delivery_rollup_codes (
    digest_id TEXT NOT NULL REFERENCES digests (id) ON DELETE CASCADE,
    smtp_code BIGINT NOT NULL,
    n         BIGINT NOT NULL,
    PRIMARY KEY (digest_id, smtp_code)
);
-- Deliveries of no digest (confirmation, welcome) counted by kind as they are deleted: the
-- list's totals are these plus the rows still there. Test sends are in no count.
CREATE TABLE message_rollups (
    kind          TEXT PRIMARY KEY,
    sent          BIGINT NOT NULL,
    failed        BIGINT NOT NULL,
    bounced       BIGINT NOT NULL,
    suppressed    BIGINT NOT NULL,
    first_sent_at BIGINT,
    last_sent_at  BIGINT
);
ALTER TABLE digests ADD COLUMN rolled_up_at BIGINT;
ALTER TABLE digests ADD COLUMN pruned_at BIGINT;
ALTER TABLE digest_waves ADD COLUMN sent BIGINT;
-- The oldest deliveries of no digest first, for their deletion in batches.
CREATE INDEX deliveries_no_digest ON deliveries (created_at, id) WHERE digest_id IS NULL;
