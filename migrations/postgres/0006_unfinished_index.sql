-- Whether a digest still has mail to send ("queued or sending?") needs only its unfinished
-- rows. Indexed on (digest_id, status), both status changes of every delivery rewrote an
-- entry (about 5% of the worker's CPU with a 4.4 KB message, BENCHMARKS.md); the other
-- per-digest reads go through the (digest_id, subscriber_id) key.
DROP INDEX deliveries_digest;
CREATE INDEX deliveries_unfinished ON deliveries (digest_id) WHERE status IN ('queued', 'sending');
