-- Feeds the poller turns into pending items (issue 22), and the entries it has seen.

CREATE TABLE feeds (
    id                   TEXT PRIMARY KEY,
    url                  TEXT NOT NULL UNIQUE,
    title                TEXT,
    etag                 TEXT,
    last_modified        TEXT,
    last_polled_at       BIGINT,
    last_success_at      BIGINT,
    last_error           TEXT,
    last_error_at        BIGINT,
    -- When the current run of failures began (NULL while the feed works).
    failing_since        BIGINT,
    consecutive_failures BIGINT NOT NULL DEFAULT 0,
    created_at           BIGINT NOT NULL
);

-- One row per (feed, guid or normalised link) ever seen: an entry becomes an item once.
CREATE TABLE feed_entries (
    feed_id   TEXT NOT NULL REFERENCES feeds (id),
    entry_key TEXT NOT NULL,
    item_id   TEXT,
    seen_at   BIGINT NOT NULL,
    PRIMARY KEY (feed_id, entry_key)
);

-- Feed items are deduplicated by URL against every item.
CREATE INDEX items_url ON items (url);
