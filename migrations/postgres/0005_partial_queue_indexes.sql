-- The queue's indexes cover only the rows in the state each one serves. Indexed on
-- (status, ...), every step of a delivery (queued -> sending -> sent) rewrote entries in all of
-- them; the worker's profile showed SQLite's index maintenance as the largest single cost.
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (run_at) WHERE status = 'queued';
DROP INDEX deliveries_lease;
CREATE INDEX deliveries_lease ON deliveries (lease_until) WHERE status = 'sending';
-- Claims read their rows back with RETURNING and outcomes name their rows by id: nothing
-- looks a claim up by its id any more.
DROP INDEX deliveries_claim;
DROP INDEX deliveries_sent_at;
CREATE INDEX deliveries_sent_at ON deliveries (sent_at) WHERE status = 'sent';
DROP INDEX deliveries_updated;
CREATE INDEX deliveries_failed ON deliveries (updated_at) WHERE status = 'failed';
