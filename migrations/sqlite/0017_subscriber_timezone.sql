-- A subscriber's own time zone (an IANA name); NULL means the list's (the daily schedule's).
ALTER TABLE subscribers ADD COLUMN timezone TEXT;
