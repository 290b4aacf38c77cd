-- Session: what a pooled connection sets for itself when DATABASE_URL is a pooler in transaction mode (PgBouncer),
-- where nothing set on a session survives the transaction: flowline/data/db.py sends it with each transaction's
-- first statement, in the same round trip.

-- name: set_transaction_settings :one
-- Sets the current transaction's statement_timeout (timeout_ms milliseconds, 0: none), time zone (UTC, so timestamps PostgreSQL serialises carry +00:00) and jit (off: flowline/core/config.py says why): what startup options give a direct connection.
SELECT set_config('statement_timeout', %(timeout_ms)s::text, true) AS statement_timeout,
       set_config('TimeZone', 'UTC', true) AS time_zone,
       set_config('jit', 'off', true) AS jit;
