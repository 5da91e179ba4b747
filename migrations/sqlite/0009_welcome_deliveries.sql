-- A third kind of delivery: `welcome`, the email a subscriber gets once they confirm (queued
-- in the confirmation's transaction, sent by the worker like every other email). The kind's
-- CHECK is written as comparisons, as 0008 did for the status.
--
-- SQLite changes a CHECK by rebuilding the table, as 0008 did: the queue is set aside first
-- and put back, row for row, once the new table is in place.
CREATE TEMP TABLE queue_before_0009 AS SELECT delivery_id, digest_id, run_at FROM delivery_queue;
DROP TABLE delivery_queue;

CREATE TABLE deliveries_0009 (
    id             TEXT PRIMARY KEY NOT NULL,
    kind           TEXT NOT NULL CHECK (kind = 'confirmation' OR kind = 'digest' OR kind = 'welcome'),
    subscriber_id  TEXT NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    -- Set for digest deliveries; (digest_id, subscriber_id) is unique, so fan-out is idempotent.
    digest_id      TEXT,
    status         TEXT NOT NULL
        CHECK (status = 'queued' OR status = 'sending' OR status = 'sent'
               OR status = 'failed' OR status = 'suppressed'),
    attempts       INTEGER NOT NULL DEFAULT 0,
    claim_id       TEXT,
    -- Past this, a transient failure becomes `failed` instead of another retry.
    expires_at     INTEGER NOT NULL,
    last_error     TEXT,
    smtp_code      INTEGER,
    created_at     INTEGER NOT NULL,
    sent_at        INTEGER,
    updated_at     INTEGER NOT NULL,
    bounce         INTEGER NOT NULL DEFAULT 0,
    failed_at      INTEGER,
    UNIQUE (digest_id, subscriber_id)
);
INSERT INTO deliveries_0009 (id, kind, subscriber_id, digest_id, status, attempts, claim_id,
                             expires_at, last_error, smtp_code, created_at, sent_at,
                             updated_at, bounce, failed_at)
SELECT id, kind, subscriber_id, digest_id, status, attempts, claim_id, expires_at, last_error,
       smtp_code, created_at, sent_at, updated_at, bounce, failed_at
FROM deliveries ORDER BY rowid;
DROP TABLE deliveries;
ALTER TABLE deliveries_0009 RENAME TO deliveries;
CREATE INDEX deliveries_subscriber ON deliveries (subscriber_id);
CREATE INDEX deliveries_failed ON deliveries (failed_at) WHERE failed_at IS NOT NULL;

CREATE TABLE delivery_queue (
    delivery_id TEXT PRIMARY KEY REFERENCES deliveries (id) ON DELETE CASCADE,
    digest_id   TEXT,
    run_at      INTEGER NOT NULL
);
INSERT INTO delivery_queue (delivery_id, digest_id, run_at)
SELECT delivery_id, digest_id, run_at FROM queue_before_0009 ORDER BY rowid;
DROP TABLE queue_before_0009;
CREATE INDEX delivery_queue_due ON delivery_queue (run_at);
CREATE INDEX delivery_queue_digest ON delivery_queue (digest_id);
