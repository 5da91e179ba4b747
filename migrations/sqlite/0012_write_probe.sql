-- One row the write probe rewrites every few seconds, so /healthz knows whether the
-- database still takes writes (a full disk, a read-only file) when nothing else writes.
CREATE TABLE write_probe (
    id INTEGER PRIMARY KEY,
    written_at INTEGER NOT NULL
);
