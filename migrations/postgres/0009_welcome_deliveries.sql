-- A third kind of delivery: `welcome`, the email a subscriber gets once they confirm (queued
-- in the confirmation's transaction, sent by the worker like every other email).
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_kind_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_kind_check
    CHECK (kind IN ('confirmation', 'digest', 'welcome'));
