-- Test sends (issue 21): an editor mails a digest to a few addresses of their own before it
-- goes out. Each is a delivery of kind `test`, sent through the queue by the normal worker
-- (composed, signed, rate-limited like any email), with no subscriber: `subscriber_id` is
-- NULL and `digest_id` too, so no statistic, chart or export of deliveries and no digest's
-- sent/finished logic ever counts it. Its recipient and the digest it shows are kept in
-- `test_sends`, a row per address, with the request it came in (the studio's rate limit
-- counts requests per digest).
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_kind_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_kind_check
    CHECK (kind IN ('confirmation', 'digest', 'welcome', 'test'));
ALTER TABLE deliveries ALTER COLUMN subscriber_id DROP NOT NULL;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_test_has_no_subscriber
    CHECK (subscriber_id IS NOT NULL OR (kind = 'test' AND digest_id IS NULL));

CREATE TABLE test_sends (
    delivery_id TEXT PRIMARY KEY NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    digest_id   TEXT NOT NULL REFERENCES digests (id) ON DELETE CASCADE,
    -- One request of the editor's: up to five addresses share it.
    request_id  TEXT NOT NULL,
    address     TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX test_sends_digest ON test_sends (digest_id, created_at);
