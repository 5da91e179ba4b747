-- A fan-out chunk is queued as one row, not one row per delivery (issue 23, points 2 and 4).
-- Profiled on PostgreSQL (BENCHMARKS.md, "Issue 23, point 2"), a third of the fan-out's cost
-- was the queue: a `delivery_queue` row and three index entries per recipient, written by
-- the fan-out and deleted again by the claim. A chunk's deliveries have ids of one shape,
-- its own id, '-' and twelve hex digits, written in order, so the claim takes them as a range
-- of the primary key of `deliveries` instead: it reads the next ids after `after_id`, marks
-- the queued ones `sending` and moves `after_id` on (or deletes the row, the chunk read to
-- its end). Only the queued ones are sent: a delivery suppressed or cancelled meanwhile is
-- passed over. `delivery_queue` keeps everything else: welcome mail, tests, retries, a
-- wave's deliveries, and what an expired claim gives back.
CREATE TABLE queued_chunks (
    id        TEXT PRIMARY KEY,
    digest_id TEXT NOT NULL,
    run_at    BIGINT NOT NULL,
    after_id  TEXT NOT NULL
);
CREATE INDEX queued_chunks_due ON queued_chunks (run_at);
CREATE INDEX queued_chunks_digest ON queued_chunks (digest_id);
