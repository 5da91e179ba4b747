-- A claim belongs to the worker that made it: while that worker heartbeats (domain::liveness)
-- nobody takes the claim over; once its heartbeat is stale the claim goes back to the queue.
-- `lease_until` stays as the last resort for a worker that heartbeats but makes no progress.
-- Claims made before this migration have no owner and are taken over by their lease alone.
ALTER TABLE claims ADD COLUMN worker_id TEXT;
CREATE INDEX claims_worker ON claims (worker_id);
