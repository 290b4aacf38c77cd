"""Run, step and delivery statuses are written once, in flowline/core/statuses.py, and match the database."""

import ast
import re
from pathlib import Path

from flowline.core import statuses
from flowline.core.statuses import DeliveryStatus, RunStatus, StepStatus

ROOT = Path(__file__).resolve().parents[2]
STATUS_WORDS = {s.value for s in RunStatus} | {s.value for s in StepStatus} | {s.value for s in DeliveryStatus}


def _constraints():
    """Return {constraint name: the quoted words of its IN (...) list}, each as the latest migration defines it."""
    found = {}
    for path in sorted((ROOT / "migrations").glob("*.sql")):
        if path.name.endswith(".rollback.sql"):
            continue
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"CONSTRAINT (\w+) CHECK \(+\s*status IN \(([^)]*)\)", text):
            found[match[1]] = re.findall(r"'([^']*)'", match[2])
    return found


def test_the_enums_are_the_statuses_the_database_allows():
    constraints = _constraints()

    assert constraints["runs_status_valid"] == list(RunStatus)
    assert constraints["run_events_status_valid"] == list(RunStatus)
    assert constraints["run_steps_status_valid"] == list(StepStatus)
    assert constraints["webhook_deliveries_status_valid"] == list(DeliveryStatus)
    assert constraints["webhook_deliveries_finished"] == [DeliveryStatus.DELIVERED, DeliveryStatus.DEAD]


def test_finished_statuses_are_those_a_run_has_a_finish_time_in():
    text = (ROOT / "migrations" / "0001.create-core-tables.sql").read_text(encoding="utf-8")
    finished = re.search(r"runs_finished_iff_final CHECK .*?status IN \(([^)]*)\)", text)

    assert finished is not None
    assert re.findall(r"'([^']*)'", finished[1]) == list(statuses.FINISHED_STATUSES)


def test_a_status_member_is_the_text_clients_and_the_database_see():
    assert RunStatus.SUCCEEDED == "Succeeded"
    assert str(RunStatus.SUCCEEDED) == f"{RunStatus.SUCCEEDED}" == "Succeeded"
    assert "Pending" in statuses.ACTIVE_STATUSES
    assert statuses.WEBHOOK_EVENTS == ("run.succeeded", "run.failed", "run.cancelled")


def _docstrings(tree):
    """Return the ids of the string constants that are docstrings (a module's, class's or function's first line)."""
    owners = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, owners)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def test_no_status_literal_in_python_outside_the_statuses_module():
    """A status is named through its enum (RunStatus.SUCCEEDED), so a typo is an AttributeError, not a run that
    never matches; docstrings and the SQL files may name them."""
    offenders = []
    for path in [ROOT / "app.py", *sorted((ROOT / "flowline").rglob("*.py"))]:
        if path == ROOT / "flowline" / "core" / "statuses.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = _docstrings(tree)
        offenders += [
            f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in STATUS_WORDS and id(node) not in docstrings
        ]
    assert not offenders, f"status literals outside flowline/core/statuses.py: {offenders}"
