-- Bounces and complaints heard after sending (issue 20): one row per report, matched or not.
-- `dedupe_key` is "<delivery id>:<kind>" for a matched report, so the same report received
-- twice counts once; NULL (never equal) for an unmatched one, kept for operators to see.
CREATE TABLE bounce_events (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at   BIGINT NOT NULL,
    kind          TEXT NOT NULL
        CHECK (kind IN ('hard', 'soft', 'policy', 'complaint', 'ignored')),
    status        TEXT,
    diagnostic    TEXT,
    recipient     TEXT,
    message_id    TEXT,
    delivery_id   TEXT,
    subscriber_id TEXT,
    digest_id     TEXT,
    -- How it was matched: verp, message_id, recipient; NULL: unmatched.
    matched_by    TEXT,
    source        TEXT NOT NULL,
    dedupe_key    TEXT UNIQUE
);
CREATE INDEX bounce_events_subscriber ON bounce_events (subscriber_id);
CREATE INDEX bounce_events_digest ON bounce_events (digest_id, kind);
CREATE INDEX bounce_events_delivery ON bounce_events (delivery_id);
