-- Each subscriber's morning (issue 22, points 3-5): a digest delivered at a local time in
-- every subscriber's own zone, one wave per zone.

-- The daily schedule's delivery mode: 'list' (everyone at the schedule's time in its zone)
-- or 'subscriber' (everyone at the schedule's time in their own zone).
ALTER TABLE daily_schedule ADD COLUMN deliver_at TEXT NOT NULL DEFAULT 'list'
    CHECK (deliver_at IN ('list', 'subscriber'));

-- A digest delivered at `local_time` (HH:MM) on local date `local_date` in each subscriber's
-- zone; both NULL for a digest that goes to everyone at `send_at`.
ALTER TABLE digests ADD COLUMN local_time TEXT;
ALTER TABLE digests ADD COLUMN local_date TEXT;

-- The zone (IANA name) whose wave a digest delivery belongs to; set once at fan-out, so a
-- subscriber who changes zone afterwards keeps their delivery's time.
ALTER TABLE deliveries ADD COLUMN wave TEXT;

-- A digest's waves: made at fan-out, one per zone. 'waiting' until it is due: its
-- deliveries exist but are not in the queue; then 'open' (queued, due at `due_at`),
-- 'missed' (the scheduler saw it only beyond the grace window: its deliveries fail) or
-- 'cancelled' (an editor cancelled the waves not yet sent: its deliveries are suppressed).
CREATE TABLE digest_waves (
    digest_id   TEXT NOT NULL REFERENCES digests (id) ON DELETE CASCADE,
    timezone    TEXT NOT NULL,
    due_at      BIGINT NOT NULL,
    recipients  BIGINT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('waiting', 'open', 'missed', 'cancelled')),
    note        TEXT,
    PRIMARY KEY (digest_id, timezone)
);
CREATE INDEX digest_waves_due ON digest_waves (state, due_at);
