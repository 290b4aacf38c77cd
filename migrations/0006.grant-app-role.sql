-- Grants the app role read/write access to Flowline's tables, now and for every table the migrating role creates
-- later, when that role exists (deploy/roles.sql creates it; without it this migration changes nothing).
-- Rollback (0006.grant-app-role.rollback.sql) revokes those privileges; no data is lost.
--
-- For DBAs. The app role is flowline_app, or the name deploy/roles.sql stored for the owner role in this database
-- (ALTER ROLE <owner> IN DATABASE <db> SET flowline.app_role = '<app role>'). It gets exactly what the service
-- needs: SELECT, INSERT, UPDATE, DELETE on Flowline's tables (never TRUNCATE, REFERENCES, TRIGGER or any DDL),
-- USAGE on their sequences, EXECUTE on save_run_steps, and SELECT on yoyo's _yoyo_migration, which /readyz reads
-- to tell whether migrations are pending. yoyo's other tables stay the owner's alone.
-- ALTER DEFAULT PRIVILEGES makes every table, sequence and function the role running this migration (the owner)
-- creates from now on, in this schema, carry the same grants: later migrations need no GRANT of their own. Run
-- every migration as the owner; a table created by another role would not be covered.

DO $$
DECLARE
    app_role text := coalesce(nullif(current_setting('flowline.app_role', true), ''), 'flowline_app');
    schema_name text := current_schema();
    rel record;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = app_role) THEN
        RAISE NOTICE 'role % does not exist: nothing granted (deploy/roles.sql creates it)', app_role;
        RETURN;
    END IF;

    FOR rel IN
        SELECT c.relname, c.relkind
        FROM pg_class AS c
        WHERE c.relnamespace = schema_name::regnamespace
          AND c.relkind IN ('r', 'p', 'S')
          AND c.relname NOT LIKE '\_yoyo%' AND c.relname <> 'yoyo_lock'
        ORDER BY c.relname
    LOOP
        IF rel.relkind = 'S' THEN
            EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %I.%I TO %I', schema_name, rel.relname, app_role);
        ELSE
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE %I.%I TO %I', schema_name, rel.relname, app_role);
        END IF;
    END LOOP;

    -- yoyo's tables: default privileges set before yoyo created them (deploy/roles.sql run first) granted the app
    -- role write access; it keeps SELECT on _yoyo_migration only.
    FOR rel IN
        SELECT c.relname
        FROM pg_class AS c
        WHERE c.relnamespace = schema_name::regnamespace AND c.relkind IN ('r', 'p', 'S')
          AND (c.relname LIKE '\_yoyo%' OR c.relname = 'yoyo_lock')
    LOOP
        EXECUTE format('REVOKE ALL ON %I.%I FROM %I', schema_name, rel.relname, app_role);
        IF rel.relname = '_yoyo_migration' THEN
            EXECUTE format('GRANT SELECT ON TABLE %I._yoyo_migration TO %I', schema_name, app_role);
        END IF;
    END LOOP;
    EXECUTE format('GRANT EXECUTE ON FUNCTION %I.save_run_steps(uuid, integer, jsonb) TO %I', schema_name, app_role);

    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %I',
                   schema_name, app_role);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT ON SEQUENCES TO %I', schema_name, app_role);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT EXECUTE ON FUNCTIONS TO %I', schema_name, app_role);
    RAISE NOTICE 'granted read/write access to Flowline''s tables to %', app_role;
END
$$;
