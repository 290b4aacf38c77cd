"""Usage: what LLM steps used and cost over a window, by day, workflow or model (``GET /usage``), read from the
roll-up the triggers of migration 0019 keep as steps are saved, so runs removed by prune-runs stay counted.

The roll-up counts by the hour: a step counts when the UTC hour it finished in overlaps ``[since, until)``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, jsonify
from marshmallow import ValidationError

from ..data import db, replica
from . import contract, schemas
from .errors import Unprocessable
from .http import load_query

bp = Blueprint("usage", __name__)

_query_schema = schemas.UsageQuerySchema()
# The window without since: the last 30 days.
DEFAULT_DAYS = 30


def window(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    """Return ``(since, until)`` with their defaults (until now, since 30 days before until).

    :raise ValidationError: since not before until (keyed ``until``), or a window over MAX_USAGE_DAYS (``since``).
    """
    until = until or datetime.now(UTC)
    if since is None:
        if until - datetime.min.replace(tzinfo=UTC) < timedelta(days=DEFAULT_DAYS):
            raise ValidationError({"until": [f"Must be at least {DEFAULT_DAYS} days after year 1 without since."]})
        since = until - timedelta(days=DEFAULT_DAYS)
    if since >= until:
        raise ValidationError({"until": ["Must be later than since."]})
    if until - since > timedelta(days=schemas.MAX_USAGE_DAYS):
        raise ValidationError({"since": [f"The window may span at most {schemas.MAX_USAGE_DAYS} days."]})
    return since, until


def summarize(since: datetime, until: datetime, group_by: str) -> list[dict[str, Any]]:
    """Return the usage rows (key, runs, prompt_tokens, completion_tokens, cost_usd) of the hours overlapping
    ``[since, until)``, one per ``group_by`` group (day, workflow or model) with usage, in key order."""
    with db.connection() as conn:
        if group_by == "workflow":
            return db.many(conn, "sum_llm_usage_by_workflow", since=since, until=until)
        if group_by == "model":
            return db.many(conn, "sum_llm_usage_by_model", since=since, until=until)
        return db.many(conn, "sum_llm_usage_by_day", since=since, until=until)


def summarize_days_and_workflows(since: datetime, until: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return the usage rows of :func:`summarize` by day and by workflow, read together (one pass over the
    roll-ups)."""
    with db.connection() as conn:
        rows = db.many(conn, "sum_llm_usage_by_day_and_workflow", since=since, until=until)
    grouped: dict[str, list[dict[str, Any]]] = {"day": [], "workflow": []}
    for row in rows:
        grouped[row.pop("grouped_by")].append(row)
    return grouped["day"], grouped["workflow"]


@bp.get("/usage")
@contract.operation(
    "What LLM steps used and cost, by day, workflow or model (runs removed by prune-runs included)",
    query=schemas.UsageQuerySchema,
)
@contract.responds(200, schemas.UsageSchema, "One row per group with usage, in key order.")
@contract.errors(422, 503)
@replica.reads
def get_usage() -> Response:
    """Return ``{usage: [{key, runs, prompt_tokens, completion_tokens, cost_usd}]}`` for the steps that finished
    in the hours overlapping ``[since, until)`` (default the last 30 days), grouped by ``group_by`` (default day).

    :raise 422: an unknown parameter or group, an instant without its offset, since not before until, or a window
        over 366 days.
    """
    query = load_query(_query_schema)
    try:
        since, until = window(query.get("since"), query.get("until"))
    except ValidationError as exc:
        raise Unprocessable("The query string is invalid; see 'errors'.", errors=exc.normalized_messages()) from None
    return jsonify({"usage": summarize(since, until, query["group_by"])})
