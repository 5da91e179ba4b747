-- Times are milliseconds since the Unix epoch (UTC), ids are UUIDv7 text: the same on every
-- backend, and sortable.

CREATE TABLE subscribers (
    id                    TEXT PRIMARY KEY NOT NULL,
    email                 TEXT NOT NULL UNIQUE,
    name                  TEXT,
    status                TEXT NOT NULL
        CHECK (status IN ('pending', 'confirmed', 'unsubscribed', 'bounced')),
    -- Unsubscribe links must be printable in every email, so this token is kept as issued.
    unsubscribe_token     TEXT NOT NULL UNIQUE,
    -- Consent evidence for the latest sign-up: when, from where, with what.
    consent_at            INTEGER NOT NULL,
    consent_ip            TEXT,
    consent_user_agent    TEXT,
    confirmed_at          INTEGER,
    unsubscribed_at       INTEGER,
    bounced_at            INTEGER,
    -- When the last confirmation email was queued; limits re-sends to one per 10 minutes.
    confirmation_queued_at INTEGER,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);

CREATE INDEX subscribers_status ON subscribers (status);

-- Only the SHA-256 of a confirmation token is stored; the token itself exists in the email.
CREATE TABLE confirmation_tokens (
    token_hash     TEXT PRIMARY KEY NOT NULL,
    subscriber_id  TEXT NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    used_at        INTEGER
);

CREATE INDEX confirmation_tokens_subscriber ON confirmation_tokens (subscriber_id);

-- The durable queue: one row per message per subscriber.
CREATE TABLE deliveries (
    id             TEXT PRIMARY KEY NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('confirmation', 'digest')),
    subscriber_id  TEXT NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    -- Set for digest deliveries; (digest_id, subscriber_id) is unique, so fan-out is idempotent.
    digest_id      TEXT,
    status         TEXT NOT NULL
        CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'suppressed')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    run_at         INTEGER NOT NULL,
    lease_until    INTEGER,
    claim_id       TEXT,
    -- Past this, a transient failure becomes `failed` instead of another retry.
    expires_at     INTEGER NOT NULL,
    last_error     TEXT,
    smtp_code      INTEGER,
    created_at     INTEGER NOT NULL,
    sent_at        INTEGER,
    updated_at     INTEGER NOT NULL,
    UNIQUE (digest_id, subscriber_id)
);

CREATE INDEX deliveries_due ON deliveries (status, run_at);
CREATE INDEX deliveries_lease ON deliveries (status, lease_until);
CREATE INDEX deliveries_claim ON deliveries (claim_id);
CREATE INDEX deliveries_subscriber ON deliveries (subscriber_id);
