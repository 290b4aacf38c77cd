"""Console pages for runs: the list of runs (all workflows or one, by status, with the last day's counts), one
run's page (its timeline, steps, events, cancel and re-run), a run's or step's whole text, and the queue and
its workers. Actions call the JSON API's operations (``flowline.api.runs``); long text is cut in SQL.

Queries per page, whatever the number of rows: the list 2 (a ``*_cut_page`` and a ``count_*_by_status_since``),
a run 2 (``get_run_cut_json``, ``list_run_events_json``), a whole text 1, the queue 4 (``get_queue_stats``,
``list_workers_with_runs``, ``list_recent_failures``, ``count_runs_finished_per_minute``).
"""

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from ..api import runs
from ..api.errors import NotFound
from ..api.http import load_query, parse_id, split_page
from ..api.schemas import AllRunsQuerySchema
from ..core.config import settings_of
from ..core.statuses import FINISHED_STATUSES, RUN_STATUSES, RunStatus
from ..data import db, replica
from . import timeline
from .blueprint import bp

PAGE_SIZE = 25
# How much of a long text (an output, an error, an input: up to a million characters) a page shows.
LIST_TEXT_CUT = 200
RUN_TEXT_CUT = 2000
COUNTS_SINCE_S = 24 * 3600
# How often an unfinished run's page checks whether the run changed.
REFRESH_S = 2
_WHAT = {"input": "Input", "output": "Output", "error": "Error"}
# The queue page: failures of the last hour, runs finished per minute over the last hour, workers heard from
# within a day (alive: within the metrics' window).
QUEUE_WINDOW_S = 3600
QUEUE_MINUTES = 60
FAILURES_SHOWN = 20
WORKERS_SHOWN = 100
WORKERS_SHOWN_FOR_S = 24 * 3600
QUEUE_COUNT_CAP = 100_000

_query_schema = AllRunsQuerySchema()


def _parse_time(value: str | None) -> datetime | None:
    """Return an ISO timestamp from the JSON PostgreSQL built as a datetime (None stays None)."""
    return datetime.fromisoformat(value) if value else None


@bp.get("/runs", endpoint="runs")
@replica.reads
def runs_list() -> ResponseReturnValue:
    """The runs of every workflow (or of ``workflow_id``), newest first, optionally in one ``status``, a page of
    ``limit`` (default 25) after ``cursor``; with the counts by status of the runs created in the last 24 hours.

    :raise 422: an unknown parameter or status, a workflow_id that is not a UUID, a bad limit or cursor.
    """
    if "" in request.args.values():
        # The filter form's "Any" sends status= : an empty filter is no filter, at its own URL.
        given: dict[str, Any] = {key: value for key, value in request.args.items() if value}
        return redirect(url_for("console.runs", **given))
    query = load_query(_query_schema)
    limit = query.get("limit", PAGE_SIZE)
    status, workflow_id = query.get("status"), query.get("workflow_id")
    with db.connection() as conn:
        rows = runs.page(
            conn, query.get("cursor"), limit, workflow_id=workflow_id, status=status, text_cut=LIST_TEXT_CUT
        )
        if workflow_id is not None:
            counted = db.many(
                conn, "count_workflow_runs_by_status_since", workflow_id=workflow_id, since_s=COUNTS_SINCE_S
            )
        else:
            counted = db.many(conn, "count_runs_by_status_since", since_s=COUNTS_SINCE_S)
    counts = {row["status"]: row["runs"] for row in counted}
    shown, next_cursor = split_page(rows, limit)
    filters = {k: v for k, v in (("workflow_id", workflow_id), ("status", status)) if v is not None}
    if "limit" in query:
        filters["limit"] = limit
    return render_template(
        "console/runs.html",
        runs=shown,
        next_cursor=next_cursor,
        first="cursor" not in query,
        counts=[(name, counts.get(name, 0)) for name in RUN_STATUSES],
        total=sum(counts.values()),
        statuses=RUN_STATUSES,
        status=status,
        workflow_id=workflow_id,
        # The filtered workflow's name, when this page shows one of its runs.
        workflow_name=shown[0]["workflow_name"] if workflow_id is not None and shown else None,
        filters=filters,
    )


def _load_run(run_id: uuid.UUID) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Return ``(run, steps, events)`` of ``run_id``, long texts cut.

    :raise NotFound: unknown run.
    """
    with db.connection() as conn:
        row = db.one(conn, "get_run_cut_json", run_id=run_id, text_cut=RUN_TEXT_CUT)
        if row is None:
            raise NotFound("Run not found")
        events = db.one(conn, "list_run_events_json", run_id=run_id)
    detail = json.loads(row["body"])
    # A run deleted between the two statements has no events row: its page shows none.
    return detail["run"], detail["steps"], json.loads(events["body"])["events"] if events else []


@bp.get("/runs/<run_id>")
def run(run_id: str) -> ResponseReturnValue:
    """One run: status, attempts, timings, its timeline, steps (texts cut, each with a link to all of it), events,
    and its Cancel and Re-run forms; while it is Pending or Running the page checks itself and reloads once the
    run changed (``poll_key``: what a change would change).

    :raise 404: unknown run.
    """
    run, steps, events = _load_run(parse_id(run_id, "Run"))
    finished = run["status"] in FINISHED_STATUSES
    for step in steps:
        step["config_text"] = json.dumps(step["config_snapshot"], indent=2, ensure_ascii=False)
    now = datetime.now(UTC)
    picture = timeline.build(
        _parse_time(run["started_at"]) or datetime.fromisoformat(run["created_at"]),
        _parse_time(run["finished_at"]) or now,
        [
            {**step, "started_at": _parse_time(step["started_at"]), "finished_at": _parse_time(step["finished_at"])}
            for step in steps
        ],
        now,
    )
    return render_template(
        "console/run.html",
        run=run,
        steps=steps,
        events=events,
        timeline=picture,
        finished=finished,
        # Made when the page is rendered: a double click on "Re-run" sends it twice and queues one run.
        idempotency_key=uuid.uuid4().hex,
        refresh_s=REFRESH_S,
        poll_key="|".join([run["status"], str(len(events)), *(step["status"] for step in steps)]),
    )


def _part(part: str) -> str:
    """Return ``part`` (input, output or error) once checked.

    :raise NotFound: another part.
    """
    if part not in _WHAT:
        raise NotFound("No such text: one of " + ", ".join(_WHAT))
    return part


@bp.get("/runs/<run_id>/<part>")
def run_text(run_id: str, part: str) -> ResponseReturnValue:
    """The whole of a run's input, output or error, as text.

    :raise 404: unknown run or part.
    """
    run_uuid = parse_id(run_id, "Run")
    with db.connection() as conn:
        row = db.one(conn, "get_run_text", run_id=run_uuid, part=_part(part))
    if row is None:
        raise NotFound("Run not found")
    return render_template("console/run_text.html", run_id=run_uuid, step=None, what=_WHAT[part], text=row["text"])


@bp.get("/runs/<run_id>/steps/<step_id>/<part>")
def step_text(run_id: str, step_id: str, part: str) -> ResponseReturnValue:
    """The whole of one step's input, output or error, as text.

    :raise 404: unknown run, step of that run, or part.
    """
    run_uuid, step_uuid = parse_id(run_id, "Run"), parse_id(step_id, "Step")
    with db.connection() as conn:
        row = db.one(conn, "get_run_step_text", run_id=run_uuid, step_id=step_uuid, part=_part(part))
    if row is None:
        raise NotFound("Step not found")
    return render_template("console/run_text.html", run_id=run_uuid, step=row, what=_WHAT[part], text=row["text"])


@bp.post("/runs/<run_id>/cancel")
def cancel_run(run_id: str) -> ResponseReturnValue:
    """Cancel the run (a Pending one at once, a Running one at its next node boundary); back to its page.

    :raise 404: unknown run.
    :raise 409: the run already finished.
    """
    row = runs.cancel(parse_id(run_id, "Run"))
    if row["previous_status"] == RunStatus.PENDING:
        flash("Run cancelled: it will not start.")
    else:
        flash("Cancellation requested: the run stops at its next node boundary.")
    return redirect(url_for("console.run", run_id=row["id"]))


@bp.post("/runs/<run_id>/rerun")
def rerun(run_id: str) -> ResponseReturnValue:
    """Queue a new run of the run's workflow on its input, under the form's Idempotency-Key (made when the page
    was rendered: sent twice, it queues one run); go to the new run's page.

    :raise 404: unknown run.
    :raise 422: a bad key, a key used with another input, or the run's file deleted since.
    """
    key = runs.check_idempotency_key(request.form.get("idempotency_key") or None)
    new_id, replayed = runs.rerun_of(parse_id(run_id, "Run"), key)
    # A form sent twice (a double click) lands on the same run, and says so: the first answer's page, with its
    # message, may never show, as the browser drops it for the second.
    flash("Re-run queued (this form was already sent: still one run)." if replayed else "Re-run queued.")
    return redirect(url_for("console.run", run_id=new_id))


@bp.get("/queue", endpoint="queue")
@replica.reads
def queue_page() -> ResponseReturnValue:
    """The queue and its workers: Pending and Running counts, the oldest claimable run's wait, the workers heard
    from with their heartbeat and the runs they hold, the last hour's failures and runs finished per minute."""
    alive_within_s = settings_of(current_app).run_lease_seconds
    with db.connection() as conn:
        stats = db.one(conn, "get_queue_stats", count_cap=QUEUE_COUNT_CAP)
        workers = db.many(
            conn,
            "list_workers_with_runs",
            alive_within_s=alive_within_s,
            shown_for_s=WORKERS_SHOWN_FOR_S,
            row_limit=WORKERS_SHOWN,
        )
        failures = db.many(
            conn, "list_recent_failures", since_s=QUEUE_WINDOW_S, text_cut=LIST_TEXT_CUT, row_limit=FAILURES_SHOWN
        )
        minutes = db.many(conn, "count_runs_finished_per_minute", minutes=QUEUE_MINUTES)
    assert stats is not None  # a SELECT without FROM: always one row
    return render_template(
        "console/queue.html",
        stats=stats,
        count_cap=QUEUE_COUNT_CAP,
        oldest_wait=stats["oldest_claimable_age_s"] is not None
        and timeline.duration(timedelta(seconds=float(stats["oldest_claimable_age_s"]))),
        workers=workers,
        alive_within_s=alive_within_s,
        failures=failures,
        failures_shown=FAILURES_SHOWN,
        chart=timeline.minute_chart(minutes),
        finished_total=sum(m["succeeded"] + m["failed"] + m["cancelled"] for m in minutes),
        failed_total=sum(m["failed"] for m in minutes),
    )
