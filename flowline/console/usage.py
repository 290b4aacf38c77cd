"""Console pages for what LLM calls use: the models with their budgets and prices and this minute's use (set and
removed through the API's operations, ``flowline.api.llm_models``), and the last 30 days' usage by day and by
workflow (``flowline.api.usage``), with a chart of the tokens per day.

Queries per page: models 2 (``list_llm_models``, ``list_llm_use_last_minute``), usage 2
(``sum_llm_usage_by_day_and_workflow``, one pass over the roll-ups for both tables, and ``list_workflow_names``).
"""

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError

from ..api import llm_models, usage
from ..api.schemas import LLMModelPutSchema
from ..data import db, replica
from . import timeline
from .blueprint import bp
from .forms import form_number

_put_schema = LLMModelPutSchema()
# Costs on every console page: {{ value | usd }}.
bp.add_app_template_filter(timeline.usd, "usd")
# The form's fields: (name, integer or not).
_BUDGET_FIELDS = (
    ("requests_per_minute", True),
    ("tokens_per_minute", True),
    ("usd_per_million_input_tokens", False),
    ("usd_per_million_output_tokens", False),
)


def _models_page(status: int = 200, **form: Any) -> tuple[str, int]:
    """Return the models page with ``status``; ``form`` fills the budget form (``values``, ``errors``)."""
    with db.connection() as conn:
        models = db.many(conn, "list_llm_models")
        used = {row["model"]: row for row in db.many(conn, "list_llm_use_last_minute")}
    rows = [{**model, "used": used.pop(model["model"], None)} for model in models]
    # Models used this minute that have no row: no budget, no price.
    rows += [{"model": name, "used": row, "unlisted": True} for name, row in sorted(used.items())]
    edited = request.args.get("model")
    values = form.pop("values", None)
    if values is None:
        values = next((dict(row) for row in rows if row["model"] == edited and not row.get("unlisted")), None)
        values = values or ({"model": edited} if edited else {})
    return render_template(
        "console/models.html", rows=rows, values=values, errors=form.pop("errors", {}), **form
    ), status


@bp.get("/models", endpoint="models")
def models_page() -> ResponseReturnValue:
    """Every model with a budget or a price, with its requests and tokens in the last 60 s (and the models used
    in them that have none); the form sets a model's budget and prices (``?model=`` fills it with one's)."""
    return _models_page()


@bp.post("/models")
def put_model() -> ResponseReturnValue:
    """Set a model's budget and prices from the form (an empty field: no limit, no price), as
    ``PUT /llm-models/{model}`` does; back to the models page.

    :raise 422: the page again, each refused value's message beside its field.
    """
    model = request.form.get("model", "").strip()
    values = {name: request.form.get(name, "").strip() for name, _ in _BUDGET_FIELDS}
    body = {name: form_number(values[name], integer) for name, integer in _BUDGET_FIELDS if values[name]}
    try:
        llm_models.check_model_name(model)
        # Every field empty is a body without a key: the API's "give at least one" message.
        stored = llm_models.put(model, _put_schema.load(body))
    except ValidationError as exc:
        return _models_page(422, values={"model": model, **values}, errors=exc.messages_dict)
    flash(f"Saved the budget and prices of {stored['model']}.")
    return redirect(url_for("console.models"))


@bp.post("/models/<path:model>/delete")
def delete_model(model: str) -> ResponseReturnValue:
    """Remove a model's budget and prices (it has no limit from then on); back to the models page.

    :raise 404: a model with no budget and no price.
    """
    llm_models.delete(model)
    flash(f"Removed the budget and prices of {model}: it has no limit and no price now.")
    return redirect(url_for("console.models"))


def _days(since: datetime, until: datetime, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return one row per UTC day from ``since`` to ``until`` (oldest first), the day's usage from ``rows``
    (sum_llm_usage_by_day's) or zeros."""
    by_key = {row["key"]: row for row in rows}
    first, last = since.date(), until.date()
    empty = {"runs": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
    return [
        {**empty, **by_key.get(day.isoformat(), {}), "key": day.isoformat()}
        for day in (first + timedelta(days=n) for n in range((last - first).days + 1))
    ]


def _total(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the sum of usage ``rows`` (cost None when one row's is)."""
    costs = [row["cost_usd"] for row in rows]
    return {
        "prompt_tokens": sum(row["prompt_tokens"] for row in rows),
        "completion_tokens": sum(row["completion_tokens"] for row in rows),
        "cost_usd": None if None in costs else sum(costs),
    }


@bp.get("/usage", endpoint="usage")
@replica.reads
def usage_page() -> ResponseReturnValue:
    """The last 30 days' LLM usage: by day (a chart of the tokens and a table) and by workflow (a table, the
    costliest first), runs removed by prune-runs included."""
    since, until = usage.window(None, datetime.now(UTC))
    by_day, workflows = usage.summarize_days_and_workflows(since, until)
    days = _days(since, until, by_day)
    with db.connection() as conn:
        names = {
            str(row["id"]): row["name"]
            for row in db.many(conn, "list_workflow_names", workflow_ids=[row["key"] for row in workflows])
        }
    workflows.sort(key=lambda row: (-(row["cost_usd"] or 0), -(row["prompt_tokens"] + row["completion_tokens"])))
    return render_template(
        "console/usage.html",
        days=days,
        workflows=[{**row, "name": names.get(row["key"])} for row in workflows],
        total=_total(days),
        chart=timeline.usage_chart(days),
        since=since,
        until=until,
    )
