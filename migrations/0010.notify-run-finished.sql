-- Adds the trigger runs_notify_finished: when a run reaches a final status (Succeeded, Failed, Cancelled), by any
-- statement (finish_run, cancel_run, requeue_run's cancel branch, the lease sweep, a sync run's end), it sends
-- NOTIFY flowline_run_finished with the run's id, delivered on commit; the API's waits (Prefer: wait=N) listen.
-- Rollback (0010.notify-run-finished.rollback.sql) drops the trigger and its function; no data is lost.
--
-- For DBAs: one pg_notify per finished run, queued at the UPDATE and sent at COMMIT. PostgreSQL serialises the
-- commits of transactions that notified (a cluster-wide lock held briefly while the notifications are queued);
-- `make bench-queue` measured the queue with and without this trigger (README, "Benchmark").

CREATE FUNCTION notify_run_finished()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('flowline_run_finished', NEW.id::text);
    RETURN NULL;
END
$$;

-- UPDATE OF status: only statements that set the status fire it; WHEN: only a change into a final status.
CREATE TRIGGER runs_notify_finished
AFTER UPDATE OF status ON runs
FOR EACH ROW
WHEN (NEW.status IN ('Succeeded', 'Failed', 'Cancelled') AND OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION notify_run_finished();
