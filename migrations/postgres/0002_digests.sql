-- Editors' material: items, digests and the daily schedule.

CREATE TABLE items (
    id          TEXT PRIMARY KEY,
    title       TEXT NOT NULL,
    url         TEXT NOT NULL,
    summary     TEXT NOT NULL,
    source      TEXT,
    -- pending: waiting for a digest; used: part of a digest (released again if it is cancelled).
    status      TEXT NOT NULL CHECK (status IN ('pending', 'used')),
    digest_id   TEXT,
    created_at  BIGINT NOT NULL
);

CREATE INDEX items_status ON items (status, created_at);

CREATE TABLE digests (
    id              TEXT PRIMARY KEY,
    subject         TEXT NOT NULL,
    intro           TEXT,
    status          TEXT NOT NULL CHECK (status IN
        ('draft', 'scheduled', 'sending', 'paused', 'sent', 'cancelled', 'missed')),
    -- The status to return to on resume.
    paused_from     TEXT,
    paused_reason   TEXT,
    send_at         BIGINT,
    -- The local date of the daily schedule this digest was made for: one per day, ever.
    daily_date      TEXT UNIQUE,
    -- Deliveries still unsent at this time give up (`failed`).
    expires_at      BIGINT,
    recipients      BIGINT,
    started_at      BIGINT,
    finished_at     BIGINT,
    note            TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE INDEX digests_status ON digests (status, send_at);

CREATE TABLE digest_items (
    digest_id  TEXT NOT NULL REFERENCES digests (id) ON DELETE CASCADE,
    item_id    TEXT NOT NULL REFERENCES items (id),
    position   BIGINT NOT NULL,
    PRIMARY KEY (digest_id, item_id)
);

-- One row: the daily schedule.
CREATE TABLE daily_schedule (
    id               BIGINT PRIMARY KEY CHECK (id = 1),
    time             TEXT NOT NULL,
    timezone         TEXT NOT NULL,
    enabled          BOOLEAN NOT NULL,
    -- The last local date handled (sent, skipped for lack of items, or missed).
    last_date        TEXT,
    updated_at       BIGINT NOT NULL
);

-- What the scheduler decided and why, for editors and operators.
CREATE TABLE events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    digest_id   TEXT,
    message     TEXT NOT NULL
);

CREATE INDEX events_at ON events (at);
CREATE INDEX deliveries_digest ON deliveries (digest_id, status);
