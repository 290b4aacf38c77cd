-- Drops concurrency limits and priorities: the workflows' limits, the runs' and schedules' priorities, the runs'
-- concurrency keys and holds, run_lanes, the triggers, functions and indexes of 0016, and the two columns it added
-- to run_list (the view is made again as 0013 made it). Data lost: every limit, priority and key (queued runs are
-- then claimed oldest first, all of them).

DROP VIEW run_list;
CREATE VIEW run_list AS
SELECT id, workflow_id, status, started_at, finished_at, error_message, final_output,
       mode, attempt, max_attempts, created_at, schedule_id, scheduled_for
FROM runs;

DROP TRIGGER runs_release_on_status ON runs;
DROP TRIGGER runs_release_inserted ON runs;
DROP TRIGGER runs_hold_requeued ON runs;
DROP TRIGGER runs_hold_inserted ON runs;
DROP FUNCTION rebuild_run_holds(uuid);
DROP FUNCTION release_held_runs();
DROP FUNCTION hold_pending_run();
DROP FUNCTION release_workflow_runs(uuid, integer);
DROP FUNCTION release_key_runs(uuid, text, integer, boolean);
DROP FUNCTION add_lane_running(uuid, text, integer);
DROP FUNCTION lock_run_limits(uuid, boolean);
DROP TABLE run_lanes;

-- Dropping the columns drops their indexes and CHECKs.
ALTER TABLE runs DROP COLUMN held_by, DROP COLUMN concurrency_key, DROP COLUMN priority;
ALTER TABLE schedules DROP COLUMN priority;
ALTER TABLE workflows DROP COLUMN max_concurrent_runs_per_key, DROP COLUMN max_concurrent_runs;
