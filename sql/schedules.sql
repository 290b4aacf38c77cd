-- Schedules: the schedules table (cron-triggered runs of a workflow); the runs they fire are inserted here too,
-- with their schedule_id and scheduled_for (the tick), and are otherwise ordinary queued runs.

-- name: get_clock :one
-- Returns the database's clock, the time every schedule's ticks are judged by (now(): the transaction's start).
SELECT now() AS now;

-- name: create_schedule :one
-- Inserts a schedule of an existing workflow; no row when the workflow does not exist.
INSERT INTO schedules (workflow_id, cron, timezone, input_text, file_id, overlap, catchup, enabled, priority,
                       next_fire_at)
SELECT id, %(cron)s, %(timezone)s, %(input_text)s, %(file_id)s, %(overlap)s, %(catchup)s, %(enabled)s, %(priority)s,
       %(next_fire_at)s
FROM workflows
WHERE id = %(workflow_id)s
RETURNING id, workflow_id, cron, timezone, input_text, file_id, overlap, catchup, enabled, priority, next_fire_at,
          skipped_count, last_skipped_at, last_fired_at, last_run_id, created_at, updated_at, version;

-- name: list_workflow_schedules :many
-- Lists a workflow's schedules, newest first.
SELECT id, workflow_id, cron, timezone, input_text, file_id, overlap, catchup, enabled, priority, next_fire_at,
       skipped_count, last_skipped_at, last_fired_at, last_run_id, created_at, updated_at, version
FROM schedules
WHERE workflow_id = %(workflow_id)s
ORDER BY created_at DESC, id;

-- name: list_workflow_schedules_with_last_run :many
-- Lists a workflow's schedules, newest first, each with its latest run's status (the console's workflow page).
SELECT s.id, s.cron, s.timezone, s.overlap, s.catchup, s.enabled, s.next_fire_at, s.skipped_count,
       s.last_skipped_at, s.last_fired_at, s.last_run_id, s.version, r.status AS last_run_status
FROM schedules AS s
LEFT JOIN runs AS r ON r.id = s.last_run_id
WHERE s.workflow_id = %(workflow_id)s
ORDER BY s.created_at DESC, s.id;

-- name: get_schedule :one
-- Returns one schedule; no row when it does not exist.
SELECT id, workflow_id, cron, timezone, input_text, file_id, overlap, catchup, enabled, priority, next_fire_at,
       skipped_count, last_skipped_at, last_fired_at, last_run_id, created_at, updated_at, version
FROM schedules
WHERE id = %(schedule_id)s;

-- name: lock_schedule :one
-- Returns one schedule locked for a change (waiting for a worker deciding its tick), with the database's clock; no row when it does not exist.
SELECT id, cron, timezone, input_text, file_id, overlap, catchup, enabled, priority, next_fire_at, now() AS now
FROM schedules
WHERE id = %(schedule_id)s
FOR UPDATE;

-- name: update_schedule :one
-- Replaces a locked schedule's settings and next tick, bumping its version, only while its version is one of expected_versions (NULL: any).
UPDATE schedules
SET cron = %(cron)s,
    timezone = %(timezone)s,
    input_text = %(input_text)s,
    file_id = %(file_id)s,
    overlap = %(overlap)s,
    catchup = %(catchup)s,
    enabled = %(enabled)s,
    priority = %(priority)s,
    next_fire_at = %(next_fire_at)s,
    version = version + 1,
    updated_at = now()
WHERE id = %(schedule_id)s
  AND (%(expected_versions)s::integer[] IS NULL OR version = ANY (%(expected_versions)s::integer[]))
RETURNING id, workflow_id, cron, timezone, input_text, file_id, overlap, catchup, enabled, priority, next_fire_at,
          skipped_count, last_skipped_at, last_fired_at, last_run_id, created_at, updated_at, version;

-- name: delete_schedule :one
-- Deletes a schedule (its runs are kept, their schedule_id set NULL), only while its version is one of expected_versions (NULL: any).
DELETE FROM schedules
WHERE id = %(schedule_id)s
  AND (%(expected_versions)s::integer[] IS NULL OR version = ANY (%(expected_versions)s::integer[]))
RETURNING id;

-- name: claim_due_schedules :many
-- Locks up to batch_size enabled schedules whose next tick is due by the database's clock, oldest tick first, skipping those another worker is deciding; each with its latest run's status and the clock. Served by schedules_due_idx.
SELECT s.id, s.workflow_id, s.cron, s.timezone, s.input_text, s.file_id, s.overlap, s.catchup, s.priority,
       s.next_fire_at, s.last_run_id, r.status AS last_run_status, now() AS now
FROM schedules AS s
LEFT JOIN runs AS r ON r.id = s.last_run_id
WHERE s.enabled
  AND s.next_fire_at <= now()
ORDER BY s.next_fire_at
LIMIT %(batch_size)s
FOR UPDATE OF s SKIP LOCKED;

-- name: fire_schedule_run :one
-- Queues an async run of a schedule for one tick, at the schedule's priority (nothing when that tick already has its run: the unique backstop), logs its Pending event and wakes idle workers on commit; no row when nothing was queued.
WITH run AS (
    INSERT INTO runs (workflow_id, mode, status, input, max_attempts, schedule_id, scheduled_for, priority,
                      webhooks_wanted, limited)
    SELECT id, 'async', 'Pending', %(input)s, %(max_attempts)s, %(schedule_id)s, %(scheduled_for)s, %(priority)s,
           has_webhooks, max_concurrent_runs IS NOT NULL
    FROM workflows
    WHERE id = %(workflow_id)s
    -- Waits for a subscription being enabled or a change of limits, and reads has_webhooks and the limit
    -- (migrations 0020, 0023).
    FOR SHARE
    ON CONFLICT (schedule_id, scheduled_for) WHERE schedule_id IS NOT NULL DO NOTHING
    RETURNING id, attempt, created_at
), event AS (
    INSERT INTO run_events (run_id, run_created_at, attempt, status, note)
    SELECT id, created_at, attempt, 'Pending', 'queued by schedule ' || %(schedule_id)s::text || ' for ' || %(scheduled_for)s::timestamptz::text
    FROM run
)
SELECT run.id
FROM run
CROSS JOIN LATERAL (SELECT pg_notify('flowline_runs', '')) AS wake;

-- name: advance_schedule :exec
-- Records a claimed schedule's decided ticks: its next tick, the ticks it skipped (and the latest), its latest fire and run (each kept when NULL). Leaves version alone: it counts clients' changes, the ETag.
UPDATE schedules
SET next_fire_at = %(next_fire_at)s,
    skipped_count = skipped_count + %(skipped)s,
    last_skipped_at = coalesce(%(last_skipped_at)s, last_skipped_at),
    last_fired_at = coalesce(%(last_fired_at)s, last_fired_at),
    last_run_id = coalesce(%(last_run_id)s, last_run_id)
WHERE id = %(schedule_id)s;

-- name: get_schedule_lag :one
-- Returns how many seconds late the oldest due tick of an enabled schedule is (0 when none is due); one probe of schedules_due_idx.
SELECT coalesce(extract(epoch FROM now() - min(next_fire_at)), 0)::float8 AS lag_s
FROM schedules
WHERE enabled
  AND next_fire_at <= now();
