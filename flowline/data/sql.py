"""Loads the named queries in ``sql/*.sql`` once, at import.

Each query starts with a two-line header::

    -- name: get_workflow :one
    -- Returns one workflow with its nodes as the API's JSON body.
    SELECT ...

The name is snake_case and unique across all files; the cardinality is ``:one`` (at most one row),
``:many`` (any number of rows) or ``:exec`` (no rows, the row count matters); the description line is
mandatory. Parameters are psycopg's named placeholders, ``%(name)s``.
"""

import re
from dataclasses import dataclass
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"

_HEADER = re.compile(r"^-- name: (?P<name>\S+)(?: (?P<cardinality>:\w+))?\s*$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
CARDINALITIES = (":one", ":many", ":exec")


class SQLFileError(ValueError):
    """A file in ``sql/`` breaks the named-query format."""


@dataclass(frozen=True)
class Query:
    name: str
    cardinality: str
    description: str
    text: str
    source: str


def parse(text: str, source: str) -> list[Query]:
    """Return the queries in one file's ``text`` (named ``source`` in errors), in file order.

    :raise SQLFileError: on a malformed header, a missing description or an empty body.
    """
    queries = []
    lines = text.splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("-- name:")]
    for n, start in enumerate(headers):
        where = f"{source}:{start + 1}"
        match = _HEADER.match(lines[start])
        if not match:
            raise SQLFileError(f"{where}: header must read '-- name: <name> :one|:many|:exec'")
        name, cardinality = match["name"], match["cardinality"]
        if not _NAME.match(name):
            raise SQLFileError(f"{where}: query name {name!r} is not snake_case")
        if cardinality not in CARDINALITIES:
            raise SQLFileError(f"{where}: query {name} needs a cardinality, one of {', '.join(CARDINALITIES)}")
        description = lines[start + 1] if start + 1 < len(lines) else ""
        if not description.startswith("-- ") or not description[3:].strip() or description.startswith("-- name:"):
            raise SQLFileError(f"{where}: query {name} needs a one-line '-- <description>' under its name")
        end = headers[n + 1] if n + 1 < len(headers) else len(lines)
        body = "\n".join(lines[start + 2 : end]).strip()
        if not body:
            raise SQLFileError(f"{where}: query {name} has no SQL")
        queries.append(Query(name, cardinality, description[3:].strip(), body, where))
    return queries


def load(directory: Path | str = SQL_DIR) -> dict[str, Query]:
    """Return every query in ``directory/*.sql`` as a dict keyed by name.

    :raise SQLFileError: on a malformed file, or a name defined twice (in one file or across files).
    """
    queries: dict[str, Query] = {}
    for path in sorted(Path(directory).glob("*.sql")):
        for query in parse(path.read_text(encoding="utf-8"), path.name):
            if query.name in queries:
                raise SQLFileError(
                    f"{query.source}: query {query.name} is already defined at {queries[query.name].source}"
                )
            queries[query.name] = query
    return queries


QUERIES = load()
