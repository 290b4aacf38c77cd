-- Flowline's database roles, for least privilege: an owner role that owns the schema and runs the migrations, and
-- an app role the service runs as, which can only read and write Flowline's tables. See the README, "For DBAs".
--
-- Run it with psql, as a superuser, connected to Flowline's database (create the database first):
--
--   psql -X -v ON_ERROR_STOP=1 -d flowline -f deploy/roles.sql
--   psql -X -v ON_ERROR_STOP=1 -v owner_role=flowline_stage_owner -v app_role=flowline_stage_app \
--        -d flowline_stage -f deploy/roles.sql
--
-- Roles are cluster-wide: the first run creates them, and a run for a second database on the same cluster reuses
-- them (or give that database its own pair, as in the second line). The rest is per database. Running it again
-- is safe: it creates only what is missing and drops nothing. It sets no password (none belongs in a file or a
-- shell history): afterwards run `\password flowline_owner` and `\password flowline_app` in psql, or let your
-- cluster's authentication (pg_hba.conf: certificates, peer, IAM) admit them.
--
-- What it does, in this database:
--   1. creates the two roles (LOGIN, and nothing more: no superuser, CREATEDB, CREATEROLE, replication or RLS bypass);
--   2. lets both connect; takes CREATE on schema public from PUBLIC (PostgreSQL 15's default; 14 still grants it),
--      gives the owner USAGE and CREATE on it, the app role USAGE only: the app role cannot create anything;
--   3. records the app role's name for the owner's sessions in this database (flowline.app_role), so migration 0006
--      grants to it, and sets the default privileges the owner's future tables get;
--   4. when the database already holds Flowline's schema (migrated before these roles existed), hands every table,
--      sequence and function in schema public to the owner and grants the app role what migration 0006 would.
-- Then run the migrations as the owner and the service as the app role (README).

\if :{?owner_role}
\else
  \set owner_role flowline_owner
\endif
\if :{?app_role}
\else
  \set app_role flowline_app
\endif

-- The DO block below reads the names from these session settings: psql does not substitute inside $$ … $$.
SET flowline.owner_role = :'owner_role';
SET flowline.app_role = :'app_role';

DO $$
DECLARE
    owner_role text := current_setting('flowline.owner_role');
    app_role text := current_setting('flowline.app_role');
    db text := current_database();
    role_name text;
    obj record;
BEGIN
    IF owner_role = app_role THEN
        RAISE EXCEPTION 'owner_role and app_role must differ (both are %)', owner_role;
    END IF;
    IF current_user IN (owner_role, app_role) THEN
        RAISE EXCEPTION 'run this script as a superuser, not as % (it is one of the roles it restricts)', current_user;
    END IF;

    -- 1. The roles.
    FOREACH role_name IN ARRAY ARRAY[owner_role, app_role] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('CREATE ROLE %I LOGIN', role_name);
            RAISE NOTICE 'created role %', role_name;
        END IF;
        EXECUTE format('ALTER ROLE %I NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS', role_name);
    END LOOP;
    IF pg_has_role(app_role, owner_role, 'MEMBER') THEN
        RAISE EXCEPTION '% is a member of %: it would have the owner''s privileges; REVOKE % FROM % first',
            app_role, owner_role, owner_role, app_role;
    END IF;

    -- 2. The database and the schema.
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I, %I', db, owner_role, app_role);
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA public TO %I', owner_role);
    EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', app_role);

    -- 3. What migrations running as the owner grant.
    EXECUTE format('ALTER ROLE %I IN DATABASE %I SET flowline.app_role = %L', owner_role, db, app_role);
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public '
                   'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %I', owner_role, app_role);
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public '
                   'GRANT USAGE, SELECT ON SEQUENCES TO %I', owner_role, app_role);
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public '
                   'GRANT EXECUTE ON FUNCTIONS TO %I', owner_role, app_role);

    -- 4. A schema that already exists (nothing happens in an empty database).
    FOR obj IN
        SELECT c.relname, c.relkind, c.relname LIKE '\_yoyo%' OR c.relname = 'yoyo_lock' AS yoyo,
               -- a serial or identity column's sequence: it changes owner with its table, never on its own
               EXISTS (SELECT FROM pg_depend AS d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                                    AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')) AS column_owned
        FROM pg_class AS c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'S', 'v', 'm')
        ORDER BY c.relname
    LOOP
        IF NOT obj.column_owned THEN
            EXECUTE format('ALTER %s public.%I OWNER TO %I',
                           CASE obj.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                                            WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
                           obj.relname, owner_role);
        END IF;
        IF obj.yoyo THEN
            -- yoyo's bookkeeping is the owner's; the app role reads _yoyo_migration (/readyz) and nothing else.
            EXECUTE format('REVOKE ALL ON public.%I FROM %I', obj.relname, app_role);
            IF obj.relname = '_yoyo_migration' THEN
                EXECUTE format('GRANT SELECT ON TABLE public._yoyo_migration TO %I', app_role);
            END IF;
        ELSIF obj.relkind = 'S' THEN
            EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE public.%I TO %I', obj.relname, app_role);
        ELSE
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE public.%I TO %I', obj.relname, app_role);
        END IF;
    END LOOP;
    FOR obj IN
        SELECT p.oid::regprocedure AS signature
        FROM pg_proc AS p
        WHERE p.pronamespace = 'public'::regnamespace
          AND NOT EXISTS (SELECT FROM pg_depend AS d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                                                       AND d.deptype = 'e')  -- not an extension's
    LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO %I', obj.signature, owner_role);
        EXECUTE format('GRANT EXECUTE ON ROUTINE %s TO %I', obj.signature, app_role);
    END LOOP;

    RAISE NOTICE 'database %: migrations run as %, the service as %', db, owner_role, app_role;
END
$$;

RESET flowline.owner_role;
RESET flowline.app_role;
