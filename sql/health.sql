-- Health: readiness checks against the database and yoyo's migration bookkeeping (read only).

-- name: ping :one
-- Returns one row when the database answers.
SELECT 1 AS ok;

-- name: list_applied_migrations :many
-- Lists the migration ids yoyo has recorded as applied, reading its table without taking its lock.
SELECT migration_id
FROM _yoyo_migration;
