-- Test sends (issue 21): an editor mails a digest to a few addresses of their own before it
-- goes out. Each is a delivery of kind `test`, sent through the queue by the normal worker
-- (composed, signed, rate-limited like any email), with no subscriber: `subscriber_id` is
-- NULL and `digest_id` too, so no statistic, chart or export of deliveries and no digest's
-- sent/finished logic ever counts it. Its recipient and the digest it shows are kept in
-- `test_sends`, a row per address, with the request it came in (the studio's rate limit
-- counts requests per digest).
--
-- SQLite changes a CHECK and a NOT NULL by rebuilding the table, as 0008 and 0009 did: the
-- queue is set aside first and put back, row for row, once the new table is in place.
CREATE TEMP TABLE queue_before_0020 AS SELECT delivery_id, digest_id, run_at FROM delivery_queue;
DROP TABLE delivery_queue;

CREATE TABLE deliveries_0020 (
    id             TEXT PRIMARY KEY NOT NULL,
    kind           TEXT NOT NULL CHECK (kind = 'confirmation' OR kind = 'digest' OR kind = 'welcome'
                                        OR kind = 'test'),
    -- NULL only for a test send, which goes to an address and not to a subscriber.
    subscriber_id  TEXT REFERENCES subscribers (id) ON DELETE CASCADE,
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
    UNIQUE (digest_id, subscriber_id),
    CHECK (subscriber_id IS NOT NULL OR (kind = 'test' AND digest_id IS NULL))
);
INSERT INTO deliveries_0020 (id, kind, subscriber_id, digest_id, status, attempts, claim_id,
                             expires_at, last_error, smtp_code, created_at, sent_at,
                             updated_at, bounce, failed_at)
SELECT id, kind, subscriber_id, digest_id, status, attempts, claim_id, expires_at, last_error,
       smtp_code, created_at, sent_at, updated_at, bounce, failed_at
FROM deliveries ORDER BY rowid;
DROP TABLE deliveries;
ALTER TABLE deliveries_0020 RENAME TO deliveries;
CREATE INDEX deliveries_subscriber ON deliveries (subscriber_id);
CREATE INDEX deliveries_failed ON deliveries (failed_at) WHERE failed_at IS NOT NULL;

CREATE TABLE delivery_queue (
    delivery_id TEXT PRIMARY KEY REFERENCES deliveries (id) ON DELETE CASCADE,
    digest_id   TEXT,
    run_at      INTEGER NOT NULL
);
INSERT INTO delivery_queue (delivery_id, digest_id, run_at)
SELECT delivery_id, digest_id, run_at FROM queue_before_0020 ORDER BY rowid;
DROP TABLE queue_before_0020;
CREATE INDEX delivery_queue_due ON delivery_queue (run_at);
CREATE INDEX delivery_queue_digest ON delivery_queue (digest_id);

CREATE TABLE test_sends (
    delivery_id TEXT PRIMARY KEY NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    digest_id   TEXT NOT NULL REFERENCES digests (id) ON DELETE CASCADE,
    -- One request of the editor's: up to five addresses share it.
    request_id  TEXT NOT NULL,
    address     TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX test_sends_digest ON test_sends (digest_id, created_at);
