-- Revokes what 0006.grant-app-role.sql granted the app role (table, sequence and function privileges and the
-- default privileges for later objects). No data is lost, but the service running as the app role can no
-- longer read or write Flowline's tables (its requests fail) until 0006 is applied again.
-- The app role itself, its CONNECT on the database and its USAGE on the schema stay: deploy/roles.sql owns those.

DO $$
DECLARE
    app_role text := coalesce(nullif(current_setting('flowline.app_role', true), ''), 'flowline_app');
    schema_name text := current_schema();
    rel record;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = app_role) THEN
        RETURN;
    END IF;

    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM %I',
                   schema_name, app_role);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I REVOKE USAGE, SELECT ON SEQUENCES FROM %I', schema_name, app_role);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I REVOKE EXECUTE ON FUNCTIONS FROM %I', schema_name, app_role);

    EXECUTE format('REVOKE EXECUTE ON FUNCTION %I.save_run_steps(uuid, integer, jsonb) FROM %I', schema_name, app_role);
    FOR rel IN
        SELECT c.relname, c.relkind
        FROM pg_class AS c
        WHERE c.relnamespace = schema_name::regnamespace AND c.relkind IN ('r', 'p', 'S')
        ORDER BY c.relname
    LOOP
        IF rel.relkind = 'S' THEN
            EXECUTE format('REVOKE USAGE, SELECT ON SEQUENCE %I.%I FROM %I', schema_name, rel.relname, app_role);
        ELSE
            EXECUTE format('REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLE %I.%I FROM %I', schema_name, rel.relname, app_role);
        END IF;
    END LOOP;
END
$$;
