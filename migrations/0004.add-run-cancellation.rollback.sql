-- Drops runs.cancel_requested_at. Data lost: cancellation requests of runs still Running (those runs then
-- finish normally); runs already Cancelled stay Cancelled.

ALTER TABLE runs DROP COLUMN cancel_requested_at;
