-- Times are milliseconds since the Unix epoch (UTC), ids are text: the same on every backend.
-- Integers are BIGINT throughout, so both backends read them as i64.

CREATE TABLE subscribers (
    id                     TEXT PRIMARY KEY,
    email                  TEXT NOT NULL UNIQUE,
    name                   TEXT,
    status                 TEXT NOT NULL
        CHECK (status IN ('pending', 'confirmed', 'unsubscribed', 'bounced')),
    unsubscribe_token      TEXT NOT NULL UNIQUE,
    consent_at             BIGINT NOT NULL,
    consent_ip             TEXT,
    consent_user_agent     TEXT,
    confirmed_at           BIGINT,
    unsubscribed_at        BIGINT,
    bounced_at             BIGINT,
    confirmation_queued_at BIGINT,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);

CREATE INDEX subscribers_status ON subscribers (status);

CREATE TABLE confirmation_tokens (
    token_hash     TEXT PRIMARY KEY,
    subscriber_id  TEXT NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT
);

CREATE INDEX confirmation_tokens_subscriber ON confirmation_tokens (subscriber_id);

CREATE TABLE deliveries (
    id             TEXT PRIMARY KEY,
    kind           TEXT NOT NULL CHECK (kind IN ('confirmation', 'digest')),
    subscriber_id  TEXT NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    digest_id      TEXT,
    status         TEXT NOT NULL
        CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'suppressed')),
    attempts       BIGINT NOT NULL DEFAULT 0,
    run_at         BIGINT NOT NULL,
    lease_until    BIGINT,
    claim_id       TEXT,
    expires_at     BIGINT NOT NULL,
    last_error     TEXT,
    smtp_code      BIGINT,
    created_at     BIGINT NOT NULL,
    sent_at        BIGINT,
    updated_at     BIGINT NOT NULL,
    UNIQUE (digest_id, subscriber_id)
);

CREATE INDEX deliveries_due ON deliveries (status, run_at);
CREATE INDEX deliveries_lease ON deliveries (status, lease_until);
CREATE INDEX deliveries_claim ON deliveries (claim_id);
CREATE INDEX deliveries_subscriber ON deliveries (subscriber_id);
