-- Partition upkeep for run_steps and run_events, which migration 0022 range-partitions by their run's created_at
-- (run_created_at): the view history_partitions lists their partitions with their bounds, and
-- make_history_partition() makes a missing one, the only way the app role (deploy/roles.sql: it cannot create
-- tables) gets one. Workers call it ahead of time (HISTORY_PARTITION_PERIOD, HISTORY_PARTITIONS_AHEAD), import calls
-- it for the days it brings back. Rollback (0021.history-partition-upkeep.rollback.sql) drops the view and the
-- functions; no data is lost (the partitions made stay).
--
-- For DBAs:
--   * make_history_partition(at, period) is SECURITY DEFINER (it runs as its owner, the role running this
--     migration: the owner role), with a fixed search_path, revoked from PUBLIC and granted to the app role only.
--     It makes one partition pair (run_steps and run_events) holding `at` per call: CREATE TABLE, then ATTACH
--     PARTITION (a SHARE UPDATE EXCLUSIVE lock on the parent, not the ACCESS EXCLUSIVE of CREATE TABLE … PARTITION
--     OF; no lock on runs: the partitioned tables have no foreign keys, see 0022), under lock_timeout 1 s (it gives up rather than queue the workers' writes behind it; the next call
--     tries again) and a transaction-level advisory lock (PgBouncer-safe: no session lock) so two workers never
--     race for one partition.
--   * A partition spans one UTC period (day, week from Monday, month) holding `at`, cut short where it would meet
--     a partition made with another period: a new period setting applies to partitions made from then on.
--   * attach_history_partition(parent, from, to) does the work for one parent; the owner alone runs it (0022 does,
--     for the tables it builds). Partitions are named run_steps_pYYYYMMDD (run_events_p…) after their first UTC day: schema.sql
--     leaves them out (flowline/data/schema.py).
-- depends: 0020.fire-run-triggers-only-when-used

-- The partitions of run_steps and run_events with their bounds (run_created_at in [from_at, to_at)), and whether
-- a DETACH … CONCURRENTLY left one half-detached (prune-runs finishes it with FINALIZE). By name, not by oid: 0022
-- builds the partitioned tables under other names and renames them.
CREATE VIEW history_partitions AS
SELECT parent.relname AS parent,
       child.relname AS partition,
       bound[1]::timestamptz AS from_at,
       bound[2]::timestamptz AS to_at,
       i.inhdetachpending AS detach_pending
FROM pg_inherits AS i
JOIN pg_class AS parent ON parent.oid = i.inhparent
JOIN pg_class AS child ON child.oid = i.inhrelid
CROSS JOIN LATERAL regexp_match(pg_get_expr(child.relpartbound, child.oid),
                                'FROM \(''([^'']+)''\) TO \(''([^'']+)''\)') AS bound
WHERE parent.relnamespace = current_schema()::regnamespace
  AND parent.relname IN ('run_steps', 'run_events');
COMMENT ON VIEW history_partitions IS 'The partitions of run_steps and run_events, with their run_created_at bounds [from_at, to_at).';

CREATE FUNCTION attach_history_partition(p_parent regclass, p_from timestamptz, p_to timestamptz)
RETURNS text
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    -- Named after the table the parent is or becomes (0022 builds run_steps_next, renamed run_steps).
    v_name text := regexp_replace((SELECT relname FROM pg_class WHERE oid = p_parent), '_next$', '')
                   || to_char(p_from, '"_p"YYYYMMDD');
BEGIN
    -- The storage settings run_steps and run_events had as plain tables (migration 0005); a partitioned table holds
    -- none itself.
    EXECUTE format('CREATE TABLE %I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS) WITH (%s)', v_name, p_parent,
                   CASE WHEN p_parent::text LIKE 'run\_steps%'
                        THEN 'fillfactor = 90, autovacuum_vacuum_scale_factor = 0.05, '
                             'autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.02'
                        ELSE 'autovacuum_vacuum_scale_factor = 0.05, autovacuum_vacuum_insert_scale_factor = 0.05, '
                             'autovacuum_analyze_scale_factor = 0.02' END);
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', p_parent, v_name, p_from, p_to);
    RETURN v_name;
END
$$;
COMMENT ON FUNCTION attach_history_partition(regclass, timestamptz, timestamptz) IS 'Creates and attaches the partition [p_from, p_to) of run_steps or run_events (the owner''s; make_history_partition calls it).';

CREATE FUNCTION make_history_partition(p_at timestamptz, p_period text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
SET lock_timeout = '1s'
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_parent text;
    v_from timestamptz;
    v_to timestamptz;
    v_made text;
BEGIN
    IF p_period NOT IN ('day', 'week', 'month') THEN
        RAISE EXCEPTION 'the partition period must be day, week or month, not %', p_period
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- One maker at a time (transaction-level: released at commit, safe through PgBouncer).
    PERFORM pg_advisory_xact_lock(21, 0);
    FOREACH v_parent IN ARRAY ARRAY['run_steps', 'run_events'] LOOP
        CONTINUE WHEN EXISTS (SELECT FROM history_partitions AS h
                              WHERE h.parent = v_parent AND p_at >= h.from_at AND p_at < h.to_at);
        v_from := date_trunc(p_period, p_at);
        v_to := v_from + ('1 ' || p_period)::interval;
        -- Cut short where a partition made with another period begins or ends.
        v_from := greatest(v_from, (SELECT max(h.to_at) FROM history_partitions AS h
                                    WHERE h.parent = v_parent AND h.to_at <= p_at));
        v_to := least(v_to, (SELECT min(h.from_at) FROM history_partitions AS h
                             WHERE h.parent = v_parent AND h.from_at > p_at));
        v_made := attach_history_partition(v_parent::regclass, v_from, v_to);
    END LOOP;
    RETURN v_made;
END
$$;
COMMENT ON FUNCTION make_history_partition(timestamptz, text) IS 'Makes the partitions of run_steps and run_events holding p_at (one p_period long) when missing; returns the last one made, or NULL.';

-- Only the app role may make partitions, and nobody but the owner may attach arbitrary ones.
REVOKE EXECUTE ON FUNCTION make_history_partition(timestamptz, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION attach_history_partition(regclass, timestamptz, timestamptz) FROM PUBLIC;

DO $$
DECLARE
    app_role text := coalesce(nullif(current_setting('flowline.app_role', true), ''), 'flowline_app');
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = app_role) THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION make_history_partition(timestamptz, text) TO %I', app_role);
        -- 0006's default privileges granted it on creation.
        EXECUTE format('REVOKE EXECUTE ON FUNCTION attach_history_partition(regclass, timestamptz, timestamptz) FROM %I',
                       app_role);
    END IF;
END
$$;
