"""The tests' databases: a fresh copy of the migrated template for every test, made by emptying one an earlier test
of this process used rather than by a new CREATE DATABASE where that gives the same thing.

CREATE DATABASE ... TEMPLATE copies the whole catalog (9 MB, written to the WAL) and DROP DATABASE signals every
backend of the server: about 0.15 s of the server's time a test, and 0.8 s a test (p50) when six pytest-xdist
processes do it at once. TRUNCATE of every table costs a quarter of that. A used database is emptied only when
nothing but its rows changed: its tables, columns, constraints, privileges, functions, triggers, statistics and
migration records are the template's (``FINGERPRINT``); any other database (a test that migrated, granted, made a
partition, or was ANALYZEd, by itself or by autovacuum) is dropped and the next test gets a new copy.
"""

import psycopg

from tests.support import url_for_database

# What a test could change in a database besides its rows; equal fingerprints mean the same schema and state.
FINGERPRINT = """
SELECT md5(concat_ws('|',
    (SELECT string_agg(concat_ws(':', n.nspname, c.relname, c.relkind, c.relnatts, c.relacl::text,
                                 c.reloptions::text, c.relispartition, pg_get_expr(c.relpartbound, c.oid)),
                       ',' ORDER BY n.nspname, c.relname)
     FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')),
    (SELECT string_agg(concat_ws(':', a.attrelid::regclass::text, a.attname, format_type(a.atttypid, a.atttypmod),
                                 a.attnotnull, a.attisdropped, pg_get_expr(d.adbin, d.adrelid)),
                       ',' ORDER BY a.attrelid::regclass::text, a.attnum)
     FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid
                            JOIN pg_namespace AS n ON n.oid = c.relnamespace
                            LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE a.attnum > 0 AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')),
    (SELECT string_agg(concat_ws(':', conrelid::regclass::text, conname, pg_get_constraintdef(oid)), ','
                       ORDER BY conrelid::regclass::text, conname)
     FROM pg_constraint WHERE connamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)),
    (SELECT string_agg(concat_ws(':', nspname, nspacl::text), ',' ORDER BY nspname) FROM pg_namespace),
    (SELECT string_agg(concat_ws(':', p.oid::regprocedure::text, md5(p.prosrc), p.proacl::text, p.prosecdef,
                                 p.proconfig::text), ',' ORDER BY p.oid::regprocedure::text)
     FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')),
    (SELECT string_agg(concat_ws(':', tgrelid::regclass::text, tgname, tgenabled), ',' ORDER BY 1)
     FROM pg_trigger WHERE NOT tgisinternal),
    (SELECT string_agg(extname || ':' || extversion, ',' ORDER BY extname) FROM pg_extension),
    (SELECT count(*) FROM pg_statistic AS s JOIN pg_class AS c ON c.oid = s.starelid
                          JOIN pg_namespace AS n ON n.oid = c.relnamespace
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')),
    (SELECT string_agg(setconfig::text, ',' ORDER BY setrole) FROM pg_db_role_setting
     WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())),
    (SELECT datacl::text FROM pg_database WHERE datname = current_database()),
    (SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()),
    (SELECT string_agg(migration_id, ',' ORDER BY migration_id) FROM _yoyo_migration),
    (SELECT count(*) FROM _yoyo_log)
)) AS fingerprint
"""

# Every table the migrations made, but yoyo's own: what a test may have written to.
TABLES = """
SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', ') AS tables
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND c.relname NOT LIKE '\\_yoyo%'
"""


def create_database(server_url: str, name: str, template: str | None = None) -> None:
    """CREATE DATABASE ``name`` on the server at ``server_url``: a copy of ``template``, or empty without one."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))


def drop_database(server_url: str, *names: str) -> None:
    """Drop the databases ``names`` (those that exist), ending their sessions."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Databases:
    """This process's test databases, copies of ``template`` on the server at ``server_url``."""

    def __init__(self, server_url: str, template: str) -> None:
        self.server_url = server_url
        self.template = template
        self.spare: list[str] = []
        with psycopg.connect(url_for_database(server_url, template), autocommit=True) as conn:
            self.fingerprint = conn.execute(FINGERPRINT).fetchone()[0]
            self.tables = conn.execute(TABLES).fetchone()[0]

    def take(self, name: str) -> str:
        """Return the name of a database equal to the template: a spare one, or a new copy called ``name``."""
        if self.spare:
            return self.spare.pop()
        create_database(self.server_url, name, self.template)
        return name

    def give_back(self, name: str) -> None:
        """Empty ``name`` for the next test when only its rows changed; else drop it."""
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            # Whatever a test left connected (a pool closed late, a killed child's session) goes first.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
        if self._emptied(name):
            self.spare.append(name)
        else:
            drop_database(self.server_url, name)

    def _emptied(self, name: str) -> bool:
        try:
            with psycopg.connect(url_for_database(self.server_url, name), autocommit=True) as conn:
                if conn.execute(FINGERPRINT).fetchone()[0] != self.fingerprint:
                    return False
                conn.execute("SET lock_timeout = '2s'")
                conn.execute(f"TRUNCATE {self.tables} RESTART IDENTITY")
                return True
        except psycopg.Error:
            return False

    def close(self) -> None:
        """Drop the spare databases."""
        drop_database(self.server_url, *self.spare)
        self.spare.clear()
