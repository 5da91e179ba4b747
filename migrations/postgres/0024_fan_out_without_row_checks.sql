-- The fan-out costs less (issue 23, point 2). Profiled on a 5,000-subscriber chunk
-- (BENCHMARKS.md, "What the profile showed"): of the chunk's 87 ms, 42 ms were the two
-- foreign keys' per-row triggers (deliveries.subscriber_id -> subscribers: 24 ms;
-- delivery_queue.delivery_id -> deliveries: 18 ms), one SPI query per row each. Their
-- guarantees are kept by statement-level triggers that run once per statement over the rows
-- it deleted (transition tables):
--
-- * deleting subscribers deletes their deliveries (the cascade the key had); no delivery is
--   written for a subscriber who is gone: the only statements that write deliveries for
--   existing subscribers are the fan-outs (which read the subscribers FOR KEY SHARE, the lock
--   the key's own check took, so an erasure waits for the chunk to commit and then deletes
--   what it wrote, or the chunk waits for the erasure and skips the row), the sign-up and
--   the confirmation (in the transaction that writes the subscriber's row);
-- * deleting deliveries deletes their queue rows (the cascade the key had); queue rows are
--   only written from deliveries that exist, and a queue row whose delivery is gone is
--   dropped by the claim (it marks nothing `sending`).
--
-- SQLite keeps its foreign keys: its fan-out does not pay for them this way.

ALTER TABLE deliveries DROP CONSTRAINT deliveries_subscriber_id_fkey;
ALTER TABLE delivery_queue DROP CONSTRAINT delivery_queue_delivery_id_fkey;

CREATE FUNCTION squeeze_subscribers_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM deliveries d USING gone_subscribers g WHERE d.subscriber_id = g.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER subscribers_deleted_take_their_deliveries
    AFTER DELETE ON subscribers
    REFERENCING OLD TABLE AS gone_subscribers
    FOR EACH STATEMENT EXECUTE FUNCTION squeeze_subscribers_deleted();

CREATE FUNCTION squeeze_deliveries_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM delivery_queue q USING gone_deliveries g WHERE q.delivery_id = g.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER deliveries_deleted_leave_the_queue
    AFTER DELETE ON deliveries
    REFERENCING OLD TABLE AS gone_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION squeeze_deliveries_deleted();

-- The fan-out refreshes the queue's statistics (the claim's plan needs to know the queue is
-- no longer empty); a sample of 3,000 rows tells it that as well as one of 30,000.
ALTER TABLE delivery_queue
    ALTER COLUMN delivery_id SET STATISTICS 10,
    ALTER COLUMN digest_id SET STATISTICS 10,
    ALTER COLUMN run_at SET STATISTICS 10;
