"""The geometry of the console's three pictures, drawn as SVG by their templates (``_timeline.svg.html``,
``_bar_chart.svg.html``): plain numbers and texts here, escaped there, every colour a presentation attribute
(the Content-Security-Policy forbids inline styles) and every mark carrying its words (a label, a ``<title>``)."""

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from ..core.statuses import FINISHED_STATUSES, RunStatus

# What a status looks like in a picture; its word is always beside it.
FILLS = {
    RunStatus.PENDING: "#8a4b00",
    RunStatus.RUNNING: "#0a58ca",
    RunStatus.SUCCEEDED: "#116329",
    RunStatus.FAILED: "#b3261e",
    RunStatus.CANCELLED: "#57606a",
}

LABEL_W, CHART_W, STATUS_W = 190, 520, 170
ROW_H, BAR_H, AXIS_H = 24, 14, 28


def duration(delta: timedelta) -> str:
    """Return ``delta`` (a timedelta) as a short text: 0.4 ms, 12 ms, 3.4 s, 5.0 min."""
    ms = delta.total_seconds() * 1000
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:.1f} min"


def build(start: datetime, end: datetime, steps: Sequence[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """Return the timeline (for a run with steps) of a run that started at ``start`` (its creation when it has not) and ended at ``end``
    (now when it has not): one row per attempt heading and one per step (``steps`` in attempt, position order,
    their times as datetimes or None), each step a bar from its start to its end (now while it runs) on a time
    axis from the earliest to the latest of these times, with the axis' ticks."""
    times = [start, end, *(s["started_at"] for s in steps if s["started_at"])]
    times += [s["finished_at"] or now for s in steps if s["started_at"]]
    t0, t1 = min(times), max(times)
    span = max((t1 - t0).total_seconds(), 0.001)

    def x(at: datetime) -> float:
        """Return the horizontal position of time ``at`` on the axis."""
        return round(LABEL_W + CHART_W * (at - t0).total_seconds() / span, 2)

    rows: list[dict[str, Any]] = []
    attempt = None
    for step in steps:
        if step["attempt"] != attempt:
            attempt = step["attempt"]
            rows.append({"kind": "attempt", "label": f"Attempt {attempt}"})
        row: dict[str, Any] = {
            "kind": "step",
            "label": f"{step['position'] + 1}. {step['node_type']}",
            "status": step["status"],
            "fill": FILLS.get(step["status"], "#57606a"),
        }
        if step["started_at"]:
            ended = step["finished_at"] or now
            row["x"] = x(step["started_at"])
            row["width"] = max(round(x(ended) - row["x"], 2), 2)
            took = duration(ended - step["started_at"])
            row["took"] = took if step["finished_at"] else f"{took} so far"
        else:
            row["took"] = "not started"
        row["title"] = f"Attempt {attempt}, step {row['label']}: {step['status']}, {row['took']}"
        rows.append(row)
    for index, row in enumerate(rows):
        row["y"] = AXIS_H + index * ROW_H
    ticks = [
        {
            "x": round(LABEL_W + CHART_W * i / 4, 2),
            "label": "+" + duration(timedelta(seconds=span * i / 4)) if i else "0",
        }
        for i in range(5)
    ]
    return {
        "width": LABEL_W + CHART_W + STATUS_W,
        "height": AXIS_H + max(len(rows), 1) * ROW_H + 4,
        "label_w": LABEL_W,
        "chart_w": CHART_W,
        "status_x": LABEL_W + CHART_W + 8,
        "bar_h": BAR_H,
        "rows": rows,
        "ticks": ticks,
        "total": duration(t1 - t0),
    }


CHART_H, BAR_W, GAP = 80, 10, 2


def minute_chart(minutes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Return the bars of the runs finished per minute (``minutes``: rows of ``at``, ``succeeded``, ``failed``,
    ``cancelled``, oldest first): one stacked bar per minute, scaled to the busiest minute, each with its words."""
    busiest = max((m["succeeded"] + m["failed"] + m["cancelled"] for m in minutes), default=0)
    scale = CHART_H / max(busiest, 1)
    bars = []
    for index, minute in enumerate(minutes):
        ago = len(minutes) - 1 - index
        total = minute["succeeded"] + minute["failed"] + minute["cancelled"]
        when = "this minute" if ago == 0 else f"{ago} min ago"
        parts, top = [], CHART_H
        for status in FINISHED_STATUSES:
            height = round(minute[status.lower()] * scale, 2)
            if height:
                top -= height
                parts.append({"y": round(top, 2), "height": height, "fill": FILLS[status]})
        bars.append(
            {
                "x": index * (BAR_W + GAP),
                "parts": parts,
                "when": when,
                "total": total,
                **{key: minute[key] for key in ("succeeded", "failed", "cancelled")},
                "title": f"{when}: {total} finished ({minute['succeeded']} succeeded, {minute['failed']} failed, "
                f"{minute['cancelled']} cancelled)",
            }
        )
    return {
        "width": max(len(minutes), 1) * (BAR_W + GAP),
        "height": CHART_H + 20,
        "chart_h": CHART_H,
        "bar_w": BAR_W,
        "bars": bars,
        "busiest": busiest,
        "minutes": len(minutes),
    }


USAGE_BAR_W, USAGE_GAP = 16, 4
# What a kind of token looks like in the usage chart; its word is in the page's key and every bar's title.
TOKEN_FILLS = {"prompt_tokens": "#0a58ca", "completion_tokens": "#8a4b00"}


def usd(value: float | None) -> str:
    """Return a cost in US dollars as a short text ($0.000123, $12.34), or "unknown" for None (no price)."""
    if value is None:
        return "unknown"
    if value == 0:
        return "$0"
    return f"${value:,.2f}" if value >= 1 else f"${value:.6f}"


def usage_chart(days: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Return the bars of the tokens LLM steps used per day (``days``: rows of ``key`` (the date), ``runs``,
    ``prompt_tokens``, ``completion_tokens``, ``cost_usd``, oldest first): one bar per day, prompt and completion
    tokens stacked, scaled to the busiest day, each with its words."""
    busiest = max((d["prompt_tokens"] + d["completion_tokens"] for d in days), default=0)
    scale = CHART_H / max(busiest, 1)
    bars = []
    for index, day in enumerate(days):
        parts, top = [], CHART_H
        for kind, fill in TOKEN_FILLS.items():
            height = round(day[kind] * scale, 2)
            if height:
                top -= height
                parts.append({"y": round(top, 2), "height": height, "fill": fill})
        bars.append(
            {
                "x": index * (USAGE_BAR_W + USAGE_GAP),
                "parts": parts,
                "title": f"{day['key']}: {day['prompt_tokens']:,} prompt + {day['completion_tokens']:,} completion "
                f"tokens, {usd(day['cost_usd'])}, {day['runs']:,} run{'' if day['runs'] == 1 else 's'}",
            }
        )
    return {
        "width": max(len(days), 1) * (USAGE_BAR_W + USAGE_GAP),
        "height": CHART_H + 20,
        "chart_h": CHART_H,
        "bar_w": USAGE_BAR_W,
        "bars": bars,
        "busiest": busiest,
        "first": days[0]["key"] if days else "",
        "last": days[-1]["key"] if days else "",
    }
