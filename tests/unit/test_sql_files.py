"""The SQL files are a product surface: every query is named, described, used, and valid against the schema."""

import ast
import re
from pathlib import Path

import pytest

from flowline.data import sql

ROOT = Path(__file__).resolve().parents[2]
# Functions taking a query name, and the index of that argument: db.one/many/execute(conn, name, ...),
# http.query_json_response(name, ...) and db.py's own _send(conn, name, ...) (the per-transaction settings).
# db.execute_ddl(conn, name, **identifiers) fills a DDL query's {name} identifiers.
QUERY_NAME_ARGUMENT = {
    "db.one": 1,
    "db.many": 1,
    "db.execute": 1,
    "db.execute_ddl": 1,
    "query_json_response": 0,
    "_send": 1,
}


def _callee(call):
    if isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name):
        return f"{call.func.value.id}.{call.func.attr}"
    if isinstance(call.func, ast.Name):
        return call.func.id
    return None


def _dict_keys(statements):
    """Return {name: its keys} for the assignments among ``statements`` of a dict with constant keys: a literal
    (``{"a": 1}``) or a call of ``dict`` with keywords (``dict(a=1)``); what ``**name`` then passes."""
    found = {}
    for node in statements:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        value = node.value
        if isinstance(value, ast.Dict) and all(isinstance(k, ast.Constant) for k in value.keys):
            found[node.targets[0].id] = {k.value for k in value.keys}
        elif (
            isinstance(value, ast.Call)
            and _callee(value) == "dict"
            and not value.args
            and all(k.arg for k in value.keywords)
        ):
            found[node.targets[0].id] = {k.arg for k in value.keywords}
    return found


def _query_calls_in_code():
    """Yield ``(query name, the parameter names the call passes, "file:line")`` for every call naming a query."""
    sources = [ROOT / "app.py", ROOT / "gunicorn.conf.py", *sorted((ROOT / "flowline").rglob("*.py"))]
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        module_dicts = _dict_keys(tree.body)
        enclosing = {}  # id(node) -> the function it is in, for the dicts assigned there
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef):
                for inner in ast.walk(fn):
                    enclosing[id(inner)] = fn  # ast.walk is breadth-first: the innermost function is set last
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or _callee(node) not in QUERY_NAME_ARGUMENT:
                continue
            fn = enclosing.get(id(node))
            # A helper that takes a query name itself (query_json_response) forwards its parameter: not a use.
            if fn is not None and fn.name in QUERY_NAME_ARGUMENT:
                continue
            dicts = {**module_dicts, **(_dict_keys(ast.walk(fn)) if fn is not None else {})}
            index = QUERY_NAME_ARGUMENT[_callee(node)]
            if len(node.args) <= index:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            name = node.args[index]
            assert isinstance(name, ast.Constant) and isinstance(name.value, str), (
                f"{where}: query names must be string literals so they can be checked"
            )
            passed = set()
            for keyword in node.keywords:
                if keyword.arg is not None:
                    passed.add(keyword.arg)
                elif isinstance(keyword.value, ast.Name) and keyword.value.id in dicts:
                    passed |= dicts[keyword.value.id]
                else:
                    raise AssertionError(
                        f"{where}: pass query parameters by name (or **a dict with constant "
                        "keys assigned in the same function or module) so they can be checked"
                    )
            yield name.value, passed, where


def _query_names_used_in_code():
    """Return {query name: "file:line"} for every call that names a query in the app's code."""
    used = {}
    for name, _, where in _query_calls_in_code():
        used.setdefault(name, where)
    return used


def test_every_call_passes_exactly_the_parameters_its_query_uses():
    problems = []
    for name, passed, where in _query_calls_in_code():
        if name not in sql.QUERIES:
            continue  # test_every_query_used_in_code_exists names it
        text = sql.QUERIES[name].text
        wanted = set(re.findall(r"%\((\w+)\)s", text)) | set(re.findall(r"\{([a-z_]+)\}", text))
        if passed != wanted:
            problems.append(
                f"{where} {name}: missing {sorted(wanted - passed)}, not in the query {sorted(passed - wanted)}"
            )
    assert not problems, "\n".join(problems)


def test_every_query_used_in_code_exists():
    used = _query_names_used_in_code()
    assert used, "the scan found no query calls at all"
    missing = {name: where for name, where in used.items() if name not in sql.QUERIES}
    assert not missing, f"queries used but not defined in sql/: {missing}"


def test_every_query_in_sql_files_is_used():
    unused = sorted(set(sql.QUERIES) - set(_query_names_used_in_code()))
    assert not unused, f"queries defined in sql/ but never used: {unused}"


def test_no_sql_text_in_python_files():
    keywords = ("SELECT ", "INSERT INTO", "UPDATE ", "DELETE FROM")
    offenders = []
    for path in [ROOT / "app.py", *sorted((ROOT / "flowline").rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and any(k in node.value for k in keywords)
                and node.value.strip().upper().startswith(("SELECT", "INSERT", "UPDATE", "DELETE", "WITH"))
            ):
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, f"SQL text in Python: {offenders}"


@pytest.mark.parametrize(
    "text, message",
    [
        ("-- name: a :one\nSELECT 1;\n", "needs a one-line '-- <description>'"),
        ("-- name: a :one\n-- \nSELECT 1;\n", "needs a one-line '-- <description>'"),
        ("-- name: a\n-- Says one.\nSELECT 1;\n", "needs a cardinality"),
        ("-- name: a :some\n-- Says one.\nSELECT 1;\n", "needs a cardinality"),
        ("-- name: GetA :one\n-- Says one.\nSELECT 1;\n", "not snake_case"),
        ("-- name: a :one\n-- Says one.\n\n-- name: b :one\n-- Says two.\nSELECT 2;\n", "query a has no SQL"),
        ("-- name:a :one\n-- Says one.\nSELECT 1;\n", "header must read"),
    ],
)
def test_loader_rejects_malformed_files(tmp_path, text, message):
    (tmp_path / "bad.sql").write_text(text)
    with pytest.raises(sql.SQLFileError, match=message):
        sql.load(tmp_path)


def test_loader_rejects_a_name_defined_twice_across_files(tmp_path):
    (tmp_path / "a.sql").write_text("-- name: same :one\n-- First.\nSELECT 1;\n")
    (tmp_path / "b.sql").write_text("-- name: same :one\n-- Second.\nSELECT 2;\n")
    with pytest.raises(sql.SQLFileError, match=r"b.sql:1: query same is already defined at a.sql:1"):
        sql.load(tmp_path)


def test_loader_reads_names_descriptions_and_bodies(tmp_path):
    (tmp_path / "x.sql").write_text(
        "-- A file comment.\n\n-- name: first :many\n-- Lists things.\nSELECT 1\nFROM t;\n\n"
        "-- name: second :exec\n-- Does a thing.\nDELETE FROM t;\n"
    )
    queries = sql.load(tmp_path)
    assert list(queries) == ["first", "second"]
    assert queries["first"].cardinality == ":many"
    assert queries["first"].description == "Lists things."
    assert queries["first"].text == "SELECT 1\nFROM t;"
    assert queries["second"].text == "DELETE FROM t;"
