-- Makes the two triggers every finishing run fired cost nothing where they are not used (issue #21, part 4):
-- runs_notify_finished (0010) now sends its NOTIFY only for a run a request waits for (runs.notify_finish, set by
-- the waiting request), and runs_queue_webhook_deliveries (0009) fires only for a run whose workflow has, or had
-- since the run was queued, an enabled subscription (runs.webhooks_wanted, copied from workflows.has_webhooks,
-- which triggers on webhooks keep). Both decide in the trigger's WHEN clause, on the row itself: a finish that
-- needs neither calls no function and queues no trigger event.
-- Rollback (0020.fire-run-triggers-only-when-used.rollback.sql) drops the three columns and the webhooks
-- triggers and puts both runs triggers back as 0009 and 0010 made them; no data is lost.
--
-- No lost wake-up (flowline/api/waits.py). A waiting request (1) registers its wake-up in its process, whose
-- LISTEN connection (direct, not pooled) wakes every waiter again whenever it (re)connects; (2) runs
-- register_run_waiter (UPDATE runs SET notify_finish = true WHERE id = $1, unless already set or the run is
-- final), which commits; (3) only then reads the run, in a new statement (READ COMMITTED: a new snapshot). The
-- finishing UPDATE and (2) both write the run's row, so one waits for the other:
--   * the finish took the row first: (2) waits for its commit and then finds the run final (no write), so (3)
--     sees the final status;
--   * (2) took it first: the finish waits for (2)'s commit, then updates the newest row version (READ COMMITTED
--     re-reads a row changed under it), so its NEW.notify_finish is true and it notifies at its commit, which is
--     after (1): the listener hears it, or reconnects after it and wakes the waiter, which reads the run again;
--   * (2) found the flag already set by another waiter (committed, or (2) waited until it was): a finish that
--     took the row before that waiter's update committed before it, hence before (3); any later one sees the
--     flag.
-- Through PgBouncer (transaction mode) (2) and (3) go through the pool, the LISTEN goes direct; nothing depends on
-- the session. A waiter that crashes leaves its flag set: that run's finish sends one NOTIFY nobody needs, once
-- (a run finishes once), and the flag goes with the run; nothing accumulates.
--
-- No lost delivery. The guarantee stays 0009's: a run whose finishing statement starts after a subscription (or
-- its re-enabling) committed gets a delivery. A subscription that becomes enabled (created enabled, or enabled
-- again) locks its workflow's row FOR NO KEY UPDATE, then, in later statements (new snapshots), sets
-- has_webhooks and webhooks_wanted on every Pending or Running run of the workflow. Every statement that inserts
-- a run (enqueue_run, start_sync_run, fire_schedule_run) reads has_webhooks with FOR SHARE, which waits for that
-- lock and then reads the newest row; a subscription's lock waits, conversely, for runs being inserted to commit,
-- and its UPDATE of runs then sees them. So once the subscription committed, every unfinished run of the workflow
-- has webhooks_wanted, and its finish runs queue_webhook_deliveries as before. (FOR SHARE and FOR NO KEY UPDATE,
-- not FOR UPDATE: the foreign-key check of a new run_lanes row, in migration 0016's triggers during a claim or a
-- finish, takes KEY SHARE on the workflow while the run's row is held, and KEY SHARE does not conflict with FOR
-- NO KEY UPDATE, so the subscription's UPDATE of that run cannot deadlock with it.) Disabling or deleting the last
-- enabled subscription clears has_webhooks under the same lock (runs queued from then on look for nothing);
-- runs already flagged still look, and find nothing. Runs inserted any other way (imports, SQL by hand) take the
-- column's default, true: they look, as every run did before.
--
-- For DBAs: the columns are constant defaults (no rewrite). The webhooks triggers lock one workflow row and
-- update its unfinished runs (runs_workflow_status_created_idx) only when a subscription's enabled state changes;
-- enqueues of that workflow wait for that transaction, and a PATCH of a workflow now waits for its in-flight
-- enqueues (FOR SHARE against the PATCH's row lock). A subscription disabled (a 410, a PATCH) while its workflow
-- is being deleted can now deadlock with the delete (subscription row, then workflow row, against the reverse):
-- PostgreSQL cancels one of the two within deadlock_timeout, and nothing is lost either way. Apply it before the
-- code that uses the columns; requests that wait in API processes of the previous version while it applies are
-- not notified and answer when their wait ends (the run as it is then). `make bench-queue` measures the queue
-- before and after.
-- depends: 0019.roll-up-llm-usage

ALTER TABLE workflows ADD COLUMN has_webhooks boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN workflows.has_webhooks IS
    'Whether the workflow has an enabled webhook subscription; kept by the triggers on webhooks (migration 0020), read by every insert of a run.';

ALTER TABLE runs
    ADD COLUMN notify_finish boolean NOT NULL DEFAULT false,
    ADD COLUMN webhooks_wanted boolean NOT NULL DEFAULT true;
COMMENT ON COLUMN runs.notify_finish IS
    'A request waited for this run (Prefer: wait=N): its finish sends NOTIFY flowline_run_finished (migration 0020).';
COMMENT ON COLUMN runs.webhooks_wanted IS
    'Whether this run''s finish looks for webhook subscriptions: its workflow had an enabled one when it was queued, or gained one before it finished (migration 0020).';

UPDATE workflows AS w
SET has_webhooks = true
WHERE EXISTS (SELECT FROM webhooks WHERE workflow_id = w.id AND enabled);

-- Keeps workflows.has_webhooks, and on a change to true flags the workflow's unfinished runs (see above).
CREATE FUNCTION note_workflow_webhooks()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    wf uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.workflow_id ELSE NEW.workflow_id END;
    now_enabled boolean;
BEGIN
    PERFORM FROM workflows WHERE id = wf FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;  -- the workflow is being deleted (its subscriptions cascade)
    END IF;
    now_enabled := EXISTS (SELECT FROM webhooks WHERE workflow_id = wf AND enabled);
    UPDATE workflows SET has_webhooks = now_enabled WHERE id = wf AND has_webhooks <> now_enabled;
    IF FOUND AND now_enabled THEN
        UPDATE runs
        SET webhooks_wanted = true
        WHERE workflow_id = wf
          AND status IN ('Pending', 'Running')
          AND NOT webhooks_wanted;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER webhooks_note_inserted
AFTER INSERT ON webhooks
FOR EACH ROW
WHEN (NEW.enabled)
EXECUTE FUNCTION note_workflow_webhooks();

CREATE TRIGGER webhooks_note_enabled
AFTER UPDATE OF enabled ON webhooks
FOR EACH ROW
WHEN (OLD.enabled IS DISTINCT FROM NEW.enabled)
EXECUTE FUNCTION note_workflow_webhooks();

CREATE TRIGGER webhooks_note_deleted
AFTER DELETE ON webhooks
FOR EACH ROW
WHEN (OLD.enabled)
EXECUTE FUNCTION note_workflow_webhooks();

DROP TRIGGER runs_queue_webhook_deliveries ON runs;
CREATE TRIGGER runs_queue_webhook_deliveries
AFTER UPDATE OF status ON runs
FOR EACH ROW
WHEN (NEW.webhooks_wanted AND NEW.status IN ('Succeeded', 'Failed', 'Cancelled')
      AND OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION queue_webhook_deliveries();

DROP TRIGGER runs_notify_finished ON runs;
CREATE TRIGGER runs_notify_finished
AFTER UPDATE OF status ON runs
FOR EACH ROW
WHEN (NEW.notify_finish AND NEW.status IN ('Succeeded', 'Failed', 'Cancelled')
      AND OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION notify_run_finished();
