-- An address is one subscriber whatever the case of its letters (`Mixed@EXAMPLE.COM`,
-- `mixed@example.com`, `MIXED@example.com`): the unique key becomes lower(email), which is
-- `domain::email::key` for the ASCII-only addresses Squeeze admits. Existing case-duplicates
-- are merged first, by `domain::subscriber::merge_keeper`'s rule: a bounced row stays; else
-- the latest explicit choice (of the confirmed and unsubscribed rows, the one confirmed or
-- unsubscribed last); else the first created. The kept row keeps its id, its spelling of the
-- address and its consent evidence; the others' deliveries and confirmation tokens move to it,
-- except a digest delivery the kept row already has (one per digest and subscriber): of those
-- one stays (the kept row's own, else a sent one), the rest are dropped. The same text runs
-- on both backends.

CREATE TABLE merge_0011 AS
WITH ranked AS (
    SELECT id, lower(email) AS email_key,
           ROW_NUMBER() OVER (
               PARTITION BY lower(email)
               ORDER BY
                   CASE status WHEN 'bounced' THEN 0 WHEN 'pending' THEN 2 ELSE 1 END,
                   CASE status
                       WHEN 'confirmed' THEN COALESCE(confirmed_at, 0)
                       WHEN 'unsubscribed' THEN COALESCE(unsubscribed_at, 0)
                       ELSE 0
                   END DESC,
                   created_at, id
           ) AS place
    FROM subscribers
)
SELECT r.id AS loser, k.id AS keeper
FROM ranked r JOIN ranked k ON k.email_key = r.email_key AND k.place = 1
WHERE r.place > 1;

CREATE TABLE merge_0011_dropped AS
WITH owned AS (
    SELECT d.id, d.digest_id, d.status,
           COALESCE(m.keeper, d.subscriber_id) AS owner,
           CASE WHEN m.keeper IS NULL THEN 0 ELSE 1 END AS moved
    FROM deliveries d LEFT JOIN merge_0011 m ON m.loser = d.subscriber_id
    WHERE d.digest_id IS NOT NULL
), ranked AS (
    SELECT id, ROW_NUMBER() OVER (
               PARTITION BY owner, digest_id
               ORDER BY moved,
                        CASE status WHEN 'sent' THEN 0 WHEN 'sending' THEN 1
                                    WHEN 'queued' THEN 2 ELSE 3 END,
                        id
           ) AS place
    FROM owned
)
SELECT id FROM ranked WHERE place > 1;

DELETE FROM delivery_queue WHERE delivery_id IN (SELECT id FROM merge_0011_dropped);
DELETE FROM deliveries WHERE id IN (SELECT id FROM merge_0011_dropped);
UPDATE deliveries
SET subscriber_id = (SELECT keeper FROM merge_0011 WHERE loser = deliveries.subscriber_id)
WHERE subscriber_id IN (SELECT loser FROM merge_0011);
UPDATE confirmation_tokens
SET subscriber_id = (SELECT keeper FROM merge_0011 WHERE loser = confirmation_tokens.subscriber_id)
WHERE subscriber_id IN (SELECT loser FROM merge_0011);
DELETE FROM subscribers WHERE id IN (SELECT loser FROM merge_0011);

DROP TABLE merge_0011_dropped;
DROP TABLE merge_0011;

CREATE UNIQUE INDEX subscribers_email_lower ON subscribers (lower(email));

-- Dashboard sessions, in the database so that every `squeeze serve` behind a load balancer
-- knows them and a restart keeps them: only the SHA-256 of the session id (the cookie) is
-- stored, with the CSRF token the session's forms carry. Logout deletes the row.
CREATE TABLE admin_sessions (
    id_hash     TEXT PRIMARY KEY NOT NULL,
    csrf        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
