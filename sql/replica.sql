-- Replica: what a streaming replica (DATABASE_REPLICA_URL) is asked before history reads go to it.

-- name: get_replica_lag :one
-- Returns how far this server's data is behind its primary, in seconds: 0 when it has replayed all it received, else the time since the last transaction it replayed committed (NULL: none replayed yet); 0 on a server that is not a replica.
SELECT CASE
           WHEN NOT pg_is_in_recovery() THEN 0
           WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
           ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())
       END::float8 AS lag_s;
