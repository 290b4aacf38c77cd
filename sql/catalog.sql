-- Catalog: what Flowline's tools read of PostgreSQL's own catalog (read only).

-- name: list_partitions_named_like :many
-- Lists the partitions (schema-qualified, quoted as pg_dump takes them) whose name matches the regular expression name_pattern: what schema.sql leaves out (flowline/data/schema.py).
SELECT format('%%I.%%I', n.nspname, c.relname) AS name
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relispartition
  AND c.relname ~ %(name_pattern)s
ORDER BY 1;
