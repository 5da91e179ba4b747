-- The fan-out in chunks (issue 23, points 1-2): a digest's deliveries are written a few
-- thousand at a time, each chunk its own transaction, so workers send the first while the
-- rest is written, and a fan-out cut short (a crash) is continued from where it stopped.

-- The last subscriber id fanned out (chunks go in subscriber id order); '' before the first.
ALTER TABLE digests ADD COLUMN fan_out_cursor TEXT;
-- When the fan-out wrote its last chunk; NULL while it runs (or before it started). A digest
-- is never `sent` while its fan-out is incomplete.
ALTER TABLE digests ADD COLUMN fanned_out_at INTEGER;
-- The digests that fanned out before chunks existed did so in one transaction.
UPDATE digests SET fanned_out_at = started_at WHERE started_at IS NOT NULL;
