-- One row the write probe rewrites every few seconds, so /healthz knows whether the
-- database still takes writes (a full disk, a read-only server) when nothing else writes.
CREATE TABLE write_probe (
    id INTEGER PRIMARY KEY,
    written_at BIGINT NOT NULL
);
