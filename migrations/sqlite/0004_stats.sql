-- Whether a failed delivery was a hard bounce (the address does not exist), for stats.
ALTER TABLE deliveries ADD COLUMN bounce INTEGER NOT NULL DEFAULT 0;
CREATE INDEX deliveries_sent_at ON deliveries (sent_at);
CREATE INDEX deliveries_updated ON deliveries (status, updated_at);
