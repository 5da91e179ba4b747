-- The retention job's deletions cost less and stay out of a send's way (issue 23, point 5).
-- Profiled on a history of 100,000-subscriber digests (BENCHMARKS.md, "History and
-- retention", 2026-12-07), a batch of 2,000 deleted deliveries with a send's 100,000
-- deliveries queued took 149 ms, of which:
--
-- * 57 ms were 0024's statement-level trigger deleting the queue rows of the deleted
--   deliveries: with 2,000 of them PostgreSQL joined by hash, so every batch read the whole
--   queue (a Seq Scan of all 100,000 rows the workers were claiming from);
-- * 14 ms were the one foreign key still pointing at `deliveries`,
--   test_sends.delivery_id's ON DELETE CASCADE: one trigger query per deleted row, although
--   only test sends have a row there and no digest's delivery ever does.
--
-- Now the trigger looks the deleted ids up in each table's primary key (`= ANY` of the
-- array of them: an index scan however many, 3 ms for 2,000), and it deletes the test_sends
-- rows too, the foreign key's cascade, as 0024 did for the queue. The batch: 44 ms. What
-- the key guaranteed still holds:
--
-- * deleting deliveries deletes their test_sends rows (the cascade the key had);
-- * a test_sends row is only written in the transaction that writes its delivery
--   (`queue_test`), so none can point at a delivery that is not there.
--
-- SQLite keeps its foreign key: there the check is an index probe in the same process.

ALTER TABLE test_sends DROP CONSTRAINT test_sends_delivery_id_fkey;

CREATE OR REPLACE FUNCTION squeeze_deliveries_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM delivery_queue
    WHERE delivery_id = ANY (ARRAY(SELECT id FROM gone_deliveries));
    DELETE FROM test_sends
    WHERE delivery_id = ANY (ARRAY(SELECT id FROM gone_deliveries));
    RETURN NULL;
END
$$;
