-- Retention: deleting finished runs (their run_steps and run_events go with them: the trigger runs_delete_history)
-- older than a cutoff, for `flask --app app prune-runs` (flowline/tools/prune.py), after it dropped the history
-- partitions it could whole (sql/partitions.sql). Every batch is its own short transaction.
-- Only finished runs (Succeeded, Failed, Cancelled) are ever touched: Pending and Running runs are the queue.

-- name: prune_cutoff :one
-- Returns the database's clock minus older_than_seconds: runs that finished before it are old enough to prune.
SELECT now() - make_interval(secs => %(older_than_seconds)s) AS cutoff;

-- name: count_prunable_runs_batch :one
-- Counts up to batch_size runs in status that finished before cutoff, after the keyset cursor (after_finished_at, after_id; NULL: from the oldest), with their steps and events; returns where the batch ended.
WITH batch AS (
    SELECT id, created_at, finished_at
    FROM runs
    -- Served by runs_finished_idx (status, finished_at, id), in its order.
    WHERE status = %(status)s
      AND status IN ('Succeeded', 'Failed', 'Cancelled')
      AND finished_at < %(cutoff)s
      AND (finished_at, id) > (coalesce(%(after_finished_at)s::timestamptz, '-infinity'),
                               coalesce(%(after_id)s::uuid, '00000000-0000-0000-0000-000000000000'))
    ORDER BY finished_at, id
    LIMIT %(batch_size)s
), last AS (
    SELECT finished_at, id
    FROM batch
    ORDER BY finished_at DESC, id DESC
    LIMIT 1
)
SELECT (SELECT count(*) FROM batch) AS runs,
       (SELECT count(*) FROM run_steps WHERE (run_id, run_created_at) IN (SELECT id, created_at FROM batch)) AS steps,
       (SELECT count(*) FROM run_events WHERE (run_id, run_created_at) IN (SELECT id, created_at FROM batch)) AS events,
       (SELECT finished_at FROM last) AS last_finished_at,
       (SELECT id FROM last) AS last_id;

-- name: prune_runs_batch :one
-- Deletes up to batch_size runs in status that finished before cutoff, after the keyset cursor (NULL: from the oldest), skipping rows another transaction holds; their steps and events go with them (the trigger runs_delete_history). Returns the counts deleted and where the batch ended.
WITH doomed AS (
    SELECT id, created_at, finished_at
    FROM runs
    -- Served by runs_finished_idx (status, finished_at, id), in its order. The cursor moves past rows skipped
    -- because they were locked (the next prune takes them), so no batch rescans the index from the start.
    WHERE status = %(status)s
      AND status IN ('Succeeded', 'Failed', 'Cancelled')
      AND finished_at < %(cutoff)s
      AND (finished_at, id) > (coalesce(%(after_finished_at)s::timestamptz, '-infinity'),
                               coalesce(%(after_id)s::uuid, '00000000-0000-0000-0000-000000000000'))
    ORDER BY finished_at, id
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM runs
    WHERE id IN (SELECT id FROM doomed)
    RETURNING id
), last AS (
    SELECT finished_at, id
    FROM doomed
    ORDER BY finished_at DESC, id DESC
    LIMIT 1
)
-- The counts of steps and events read the statement's snapshot, taken before the trigger deletes them.
SELECT (SELECT count(*) FROM deleted) AS runs,
       (SELECT count(*) FROM run_steps WHERE (run_id, run_created_at) IN (SELECT id, created_at FROM doomed)) AS steps,
       (SELECT count(*) FROM run_events WHERE (run_id, run_created_at) IN (SELECT id, created_at FROM doomed)) AS events,
       (SELECT finished_at FROM last) AS last_finished_at,
       (SELECT id FROM last) AS last_id;

-- name: count_prunable_webhook_deliveries :one
-- Counts the Delivered and Dead webhook deliveries that finished before cutoff (what a prune would delete besides the runs).
SELECT count(*) AS deliveries
FROM webhook_deliveries
-- Served by webhook_deliveries_finished_idx.
WHERE status IN ('Delivered', 'Dead')
  AND finished_at < %(cutoff)s;

-- name: prune_webhook_deliveries_batch :one
-- Deletes up to batch_size Delivered or Dead webhook deliveries that finished before cutoff, skipping rows another transaction holds; returns how many.
WITH doomed AS (
    SELECT id
    FROM webhook_deliveries
    -- Served by webhook_deliveries_finished_idx. Pending and Delivering deliveries are the outbox: never pruned.
    WHERE status IN ('Delivered', 'Dead')
      AND finished_at < %(cutoff)s
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM webhook_deliveries
    WHERE id IN (SELECT id FROM doomed)
    RETURNING id
)
SELECT count(*) AS deliveries
FROM deleted;
