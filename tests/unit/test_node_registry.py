"""Node types are declared once: one module each under flowline/nodes/, listed in flowline/nodes/__init__.py, and
read from that list by everything else. Adding a type is one module and one line."""

import ast
import re
from pathlib import Path

import pytest

from flowline import nodes
from flowline.nodes.base import NodeType

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "flowline"
# Everything that needs to know the node types: request schemas, the engine, the OpenAPI document, the node
# routes' file checks, export and import, and every query.
READERS = [
    PACKAGE / "api" / "schemas.py",
    PACKAGE / "engine" / "runner.py",
    PACKAGE / "api" / "openapi.py",
    PACKAGE / "api" / "contract.py",
    PACKAGE / "api" / "nodes.py",
    *sorted((PACKAGE / "tools").glob("*.py")),
    *sorted((ROOT / "sql").glob("*.sql")),
]


def test_each_node_module_declares_one_type_named_after_it_and_the_list_names_each_once():
    modules = sorted(p.stem for p in (PACKAGE / "nodes").glob("*.py") if p.stem not in ("__init__", "base"))
    assert sorted(t.name for t in nodes.ALL) == modules
    assert len(set(nodes.NAMES)) == len(nodes.ALL) and list(nodes.BY_NAME) == list(nodes.NAMES)
    for node_type in nodes.ALL:
        assert isinstance(node_type, NodeType)
        assert all(key in node_type.config_schema.fields for key in node_type.file_keys), node_type.name
        assert node_type.description and node_type.component.isidentifier()


def _string_constants(path):
    """Yield the string constants of a Python file that are not docstrings (f-strings' literal parts included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def _sql_literals(path):
    """Yield the quoted literals of a SQL file, its comments left out."""
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        code = line.split("--", 1)[0]
        for literal in re.findall(r"'((?:[^']|'')*)'", code):
            yield lineno, literal


@pytest.mark.parametrize("path", READERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_reader_names_a_node_type(path):
    names = re.compile(r"\b(" + "|".join(map(re.escape, nodes.NAMES)) + r")\b")
    constants = _sql_literals(path) if path.suffix == ".sql" else _string_constants(path)
    named = [(lineno, text) for lineno, text in constants if names.search(text)]
    assert not named, f"{path.name} names node types (read them from flowline.nodes instead): {named}"
