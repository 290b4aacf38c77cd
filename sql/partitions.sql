-- History partitions: the partitions of run_steps and run_events (by their run's created_at, migrations 0021 and
-- 0022), listed by the view history_partitions: made ahead by the workers and for imports through
-- make_history_partition() (SECURITY DEFINER: the app role cannot create tables), dropped by prune-runs.
--
-- DDL takes no parameters: in the last three queries {parent} and {partition} are identifiers, filled by
-- db.execute_ddl as psycopg.sql.Identifier with a parent and a partition that history_partitions (or
-- list_detached_history_tables) listed, never user input.

-- name: count_history_partitions_ahead :one
-- Counts the partitions that begin after now, of run_steps or of run_events whichever has fewer (/readyz warns under 2).
SELECT least((SELECT count(*) FROM history_partitions WHERE parent = 'run_steps' AND from_at > now()),
             (SELECT count(*) FROM history_partitions WHERE parent = 'run_events' AND from_at > now())) AS ahead;

-- name: make_next_history_partition :one
-- Makes the first missing partition pair among those holding now and each of the next `ahead` periods (one pair per call, so each is its own short transaction); returns its name, or no row when none is missing.
SELECT make_history_partition(first.at, %(period)s) AS made
FROM (SELECT wanted.at
      FROM generate_series(0, %(ahead)s) AS k
      CROSS JOIN LATERAL (SELECT now() + k * ('1 ' || %(period)s)::interval AS at) AS wanted
      WHERE NOT EXISTS (SELECT FROM history_partitions AS h
                        WHERE h.parent = 'run_steps' AND wanted.at >= h.from_at AND wanted.at < h.to_at)
         OR NOT EXISTS (SELECT FROM history_partitions AS h
                        WHERE h.parent = 'run_events' AND wanted.at >= h.from_at AND wanted.at < h.to_at)
      ORDER BY k
      -- The function runs for this one row only.
      LIMIT 1) AS first;

-- name: make_history_partitions_at :one
-- Makes the partition pairs holding each of the times ats (the created_at of runs an import brings) that none holds yet; returns how many pairs it made.
SELECT count(made) AS made
FROM (SELECT make_history_partition(min(at), %(period)s) AS made
      FROM unnest(%(ats)s::timestamptz[]) AS at
      GROUP BY date_trunc(%(period)s, at, 'UTC')) AS each_period;

-- name: list_droppable_history_partitions :many
-- Lists the partitions lying wholly before cutoff whose runs a prune of statuses deletes, all of them (none Pending or Running, of a status it keeps, or finished after cutoff), oldest first; runs_created_idx finds each one's runs.
SELECT h.parent, h.partition, h.from_at, h.to_at
FROM history_partitions AS h
WHERE h.to_at <= %(cutoff)s
  AND NOT h.detach_pending
  AND NOT EXISTS (SELECT
                  FROM runs AS r
                  WHERE r.created_at >= h.from_at
                    AND r.created_at < h.to_at
                    AND NOT (r.status = ANY (%(statuses)s::text[]) AND coalesce(r.finished_at < %(cutoff)s, false)))
ORDER BY h.from_at, h.parent;

-- name: list_half_detached_history_partitions :many
-- Lists the partitions a DETACH … CONCURRENTLY left half-detached (it was interrupted), which prune-runs finishes with FINALIZE.
SELECT parent, partition
FROM history_partitions
WHERE detach_pending
ORDER BY from_at, parent;

-- name: owns_history_tables :one
-- Returns whether the current role may detach and drop the history partitions: whether it is (or is a member of) the owner of run_steps and run_events.
SELECT bool_and(pg_has_role(current_user, c.relowner, 'USAGE')) AS owner
FROM pg_class AS c
WHERE c.oid IN ('run_steps'::regclass, 'run_events'::regclass);

-- name: list_detached_history_tables :many
-- Lists the tables named as history partitions that are no partition: detached by a prune that stopped before it dropped them.
SELECT relname AS partition
FROM pg_class
WHERE relnamespace = current_schema()::regnamespace
  AND relkind = 'r'
  AND NOT relispartition
  AND relname ~ '^run_(steps|events)_p[0-9]{8}$'
ORDER BY relname;

-- name: detach_history_partition :exec
-- Detaches a partition CONCURRENTLY (only a SHARE UPDATE EXCLUSIVE lock: reads and writes go on; it waits for the transactions that might still use it); outside any transaction block.
ALTER TABLE {parent} DETACH PARTITION {partition} CONCURRENTLY;

-- name: finalize_history_partition_detach :exec
-- Finishes the DETACH … CONCURRENTLY of a partition that was interrupted.
ALTER TABLE {parent} DETACH PARTITION {partition} FINALIZE;

-- name: drop_history_partition :exec
-- Drops a detached partition (its rows with it): the table's files are unlinked, nothing is vacuumed.
DROP TABLE {partition};
