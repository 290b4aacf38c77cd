"""Every named query prepares against the migrated schema (the loader and the code's use of the queries:
tests/unit/test_sql_files.py)."""

import re

import psycopg
import pytest
from psycopg import pq

from flowline.data import sql


def _to_dollar_params(text):
    """Return ``text`` with psycopg's ``%(name)s`` placeholders as PostgreSQL's ``$n`` (one number per name)."""
    numbers = {}

    def number(match):
        return f"${numbers.setdefault(match[1], len(numbers) + 1)}"

    return re.sub(r"%\((\w+)\)s", number, text).replace("%%", "%")


def _with_identifiers(text):
    """Return ``text`` with a DDL query's ``{name}`` identifiers (db.execute_ddl) as quoted names: parsing DDL
    checks its syntax, not what it names."""
    return re.sub(r"\{([a-z_]+)\}", r'"\1"', text)


@pytest.mark.parametrize("name", sorted(sql.QUERIES))
def test_every_query_prepares_against_the_migrated_schema(database_url, name):
    """PREPARE parses, type-checks and plans the query against the real schema without running it."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        text = _with_identifiers(_to_dollar_params(sql.QUERIES[name].text))
        result = conn.pgconn.prepare(name.encode(), text.encode())
        message = (result.error_message or b"").decode()
        assert result.status == pq.ExecStatus.COMMAND_OK, f"{name} ({sql.QUERIES[name].source}): {message}"
