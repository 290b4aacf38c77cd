-- Drops the trigger runs_notify_finished and its function notify_run_finished. No data is lost; waiting requests
-- (Prefer: wait=N) then learn of a finish only when their wait ends.

DROP TRIGGER runs_notify_finished ON runs;
DROP FUNCTION notify_run_finished();
