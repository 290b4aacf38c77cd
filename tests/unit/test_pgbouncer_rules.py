"""What must never reach PgBouncer in transaction mode, checked on the code rather than left to review.

Through PgBouncer (DATABASE_URL, with DATABASE_DIRECT_URL set to the server), each transaction may run on a
different server connection, so nothing may rely on a session: no session-level SET or set_config(..., false), no
session advisory lock (pg_advisory_xact_lock is fine), no LISTEN (only the two listener modules hold one, on the
direct URL), no temporary table, no PREPARE, no cursor WITH HOLD. Checked here: every named query of sql/, every
SQL-looking string in flowline/ (the modules that use the direct URL only: migrations, schema, the commands), and
the functions the migrations define (they run inside the app's transactions). tests/e2e/test_pgbouncer.py runs the
real processes through a real PgBouncer.
"""

import ast
import re
from pathlib import Path

import pytest

from flowline.data.sql import QUERIES

ROOT = Path(__file__).resolve().parents[2]
# Hold their LISTEN on the direct URL (DATABASE_DIRECT_URL).
LISTENER_MODULES = {"flowline/worker/listener.py", "flowline/api/waits.py"}
# Connect to the direct URL only, one session of their own: may use what a session keeps.
DIRECT_MODULES = {
    "flowline/data/migrations.py",
    "flowline/data/schema.py",
    *(f"flowline/tools/{p.name}" for p in (ROOT / "flowline/tools").glob("*.py")),
}

RULES = [
    (re.compile(r"\bpg_(try_)?advisory_(un)?lock(_shared|_all)?\s*\(", re.I), "a session advisory lock"),
    (re.compile(r"\bset_config\s*\((?:[^()]|\([^()]*\))*,\s*false\s*\)", re.I), "set_config(..., false)"),
    (re.compile(r"\bCREATE\s+(?:(?:GLOBAL|LOCAL)\s+)?TEMP(?:ORARY)?\s+TABLE\b", re.I), "a temporary table"),
    (re.compile(r"(?:^|;)\s*PREPARE\s+\w+", re.I), "a PREPARE"),
    (re.compile(r"\bWITH\s+HOLD\b", re.I), "a cursor WITH HOLD"),
    (re.compile(r"(?:^|;)\s*SET\s+(?!LOCAL\b|TRANSACTION\b|CONSTRAINTS\b)", re.I), "a session-level SET"),
    (re.compile(r"(?:^|;)\s*RESET\b|\bDISCARD\s+ALL\b", re.I), "a session RESET"),
]
LISTEN = (re.compile(r"(?:^|;)\s*(?:UN)?LISTEN\b", re.I), "a LISTEN")


def _strip(sql):
    """Return ``sql`` without comments and string literals (their words are not statements)."""
    sql = re.sub(r"--[^\n]*", " ", sql)
    sql = re.sub(r"/\*.*?\*/", " ", sql, flags=re.S)
    return re.sub(r"'(?:[^']|'')*'", "''", sql)


def violations(sql, listen_allowed=False):
    """Return what ``sql`` does that PgBouncer in transaction mode would break."""
    text = _strip(sql)
    rules = RULES if listen_allowed else [*RULES, LISTEN]
    return [what for pattern, what in rules if pattern.search(text)]


def _python_sql(path):
    """Return the SQL ``path`` executes itself: the text of each ``.execute(...)`` call's first argument (an
    f-string's literal parts), the only way SQL leaves Python other than a named query of sql/."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "execute":
            first = node.args[0] if node.args else None
            parts = first.values if isinstance(first, ast.JoinedStr) else [first]
            found.append(" ".join(p.value for p in parts if isinstance(p, ast.Constant) and isinstance(p.value, str)))
    return [text for text in found if text]


@pytest.mark.parametrize(
    "sql",
    [
        "SET statement_timeout = 0",
        "SELECT 1; set search_path TO app",
        "SELECT set_config('TimeZone', 'UTC', false)",
        "SELECT pg_advisory_lock(42)",
        "SELECT pg_try_advisory_lock(hashtext(%(name)s))",
        "SELECT pg_advisory_unlock_all()",
        "CREATE TEMP TABLE t (id int)",
        "LISTEN flowline_runs",
        "PREPARE q AS SELECT 1",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "RESET ALL",
    ],
)
def test_each_session_dependency_is_caught(sql):
    assert violations(sql), sql


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE runs SET status = 'Failed' WHERE id = %(id)s",
        "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET n = t.n + 1",
        "SELECT set_config('statement_timeout', %(ms)s::text, true)",
        "SET LOCAL lock_timeout = '1s'",
        "SELECT pg_advisory_xact_lock(42)",
        "SELECT 'LISTEN x; SET y = 1' AS text -- SET z = 2",
    ],
)
def test_what_lasts_one_transaction_passes(sql):
    assert violations(sql) == []


def test_no_named_query_relies_on_a_session():
    found = {name: what for name, query in QUERIES.items() if (what := violations(query.text))}
    assert found == {}, "these queries would break through PgBouncer in transaction mode"


def test_no_module_on_the_pooled_url_relies_on_a_session():
    found = {}
    for path in sorted((ROOT / "flowline").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name in DIRECT_MODULES:
            continue
        for text in _python_sql(path):
            if what := violations(text, listen_allowed=name in LISTENER_MODULES):
                found.setdefault(name, []).append((text[:80], what))
    assert found == {}, "only the listener modules LISTEN, and nothing else may rely on a session"


def test_no_function_the_migrations_define_takes_a_session_lock():
    found = {}
    for path in sorted((ROOT / "migrations").glob("*.sql")):
        text = _strip(path.read_text())
        if what := [w for pattern, w in RULES[:1] if pattern.search(text)]:
            found[path.name] = what
    assert found == {}, "functions run inside the app's transactions, through PgBouncer"
