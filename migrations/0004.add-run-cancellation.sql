-- Lets a client cancel a Running run: the API records the request here, and the worker holding the run
-- stops at its next node boundary (a Pending run is cancelled at once and never needs it).
-- Rollback (0004.add-run-cancellation.rollback.sql) drops the column: pending cancellation requests are lost.

ALTER TABLE runs ADD COLUMN cancel_requested_at timestamptz;

COMMENT ON COLUMN runs.cancel_requested_at IS
    'When a client asked to cancel this run; the holder of a Running run stops at its next node boundary.';
