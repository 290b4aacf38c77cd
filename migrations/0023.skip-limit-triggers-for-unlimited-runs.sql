-- Makes the concurrency-limit triggers of migration 0016 cost nothing for runs no limit concerns (issue #21, part
-- 4): every claim and every finish of an async run called release_held_runs, which took the workflow's advisory
-- lock and read its limits even for a workflow with none and a run with no key (0.08-0.10 ms of PostgreSQL's time
-- per run, measured). runs.limited says whether a run's key or its workflow's max_concurrent_runs concerns it; the
-- triggers runs_hold_inserted, runs_hold_requeued and runs_release_on_status now fire only for such runs (their
-- WHEN clause reads the row itself).
-- Rollback (0023.skip-limit-triggers-for-unlimited-runs.rollback.sql) puts the three triggers back as 0016 made
-- them and drops the column; no data is lost (the column repeats what workflows and runs already say).
--
-- Why no run a limit concerns is missed. runs.limited is false only where the statement that queued the run
-- (enqueue_run, fire_schedule_run) found no key and no max_concurrent_runs on its workflow's row, read FOR SHARE;
-- runs inserted any other way (import, SQL by hand) take the default, true, and fire the triggers as before. A
-- change of a workflow's limits (PATCH /workflows/{id}, flowline/api/workflows.py) (1) updates the workflow's row
-- (FOR NO KEY UPDATE: it waits for the inserts of runs in flight, which hold FOR SHARE, and holds back later
-- ones until it commits, so they then read the new limits); (2) sets limited on every Pending and Running async
-- run of the workflow (mark_limited_runs: a new statement, so a new snapshot that sees every run committed before
-- (1) returned; a run being claimed or finished meanwhile is waited for and its newest version updated; until the
-- PATCH commits, claims skip the marked runs and their finishes wait, for the PATCH's milliseconds); (3) then
-- calls rebuild_run_holds, which takes the workflow's concurrency lock exclusively and recounts its Running runs,
-- every one of them now limited, so each of their later finishes counts itself out of run_lanes. A run queued
-- after the change commits reads the new limits.
-- Lock order: (2) takes no advisory lock, so nothing it waits for (a claim, a finish, a requeue, each holding a
-- run's row and at most the workflow's lock shared) waits for it; (3) takes the advisory lock only after, as the
-- triggers do after their row. The previous order (the advisory lock exclusively, then the workflow's row FOR
-- UPDATE) could deadlock with an enqueue of the same workflow (its row FOR SHARE, then the advisory lock shared
-- in runs_hold_inserted); PostgreSQL cancelled one of the two.
--
-- For DBAs: the column is a constant default (no rewrite, an instant under this migration's lock); nothing is
-- backfilled: every existing run fires the triggers as before. Apply it with the version that sets the column:
-- while the previous version's API serves, its PATCH of a limit does not mark runs, and runs queued by this
-- version with limited false would not be counted by that limit.
-- depends: 0022.partition-run-history

ALTER TABLE runs ADD COLUMN limited boolean NOT NULL DEFAULT true;
COMMENT ON COLUMN runs.limited IS
    'Whether a concurrency limit may concern this run (its concurrency_key, or its workflow''s max_concurrent_runs when it was queued or set since): the triggers of migration 0016 fire only for such runs (migration 0023).';

DROP TRIGGER runs_hold_inserted ON runs;
CREATE TRIGGER runs_hold_inserted
BEFORE INSERT ON runs
FOR EACH ROW
WHEN (NEW.mode = 'async' AND NEW.status = 'Pending' AND NEW.limited)
EXECUTE FUNCTION hold_pending_run();

DROP TRIGGER runs_hold_requeued ON runs;
CREATE TRIGGER runs_hold_requeued
BEFORE UPDATE OF status ON runs
FOR EACH ROW
WHEN (NEW.mode = 'async' AND OLD.status = 'Running' AND NEW.status = 'Pending' AND NEW.limited)
EXECUTE FUNCTION hold_pending_run();

DROP TRIGGER runs_release_on_status ON runs;
CREATE TRIGGER runs_release_on_status
AFTER UPDATE OF status ON runs
FOR EACH ROW
WHEN (NEW.mode = 'async' AND NEW.limited AND OLD.status IS DISTINCT FROM NEW.status
      AND (OLD.status IN ('Pending', 'Running') OR NEW.status = 'Running'))
EXECUTE FUNCTION release_held_runs();
