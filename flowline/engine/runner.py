"""The run engine: executes a workflow's nodes in order and records every step, for sync and async runs alike.

Steps of fast, pure nodes (formatter, text pass-through) are buffered and written together with the run's
outcome in one statement. Before a node that waits on the outside world (an LLM call), the buffered steps and a
Running step for that node are written first, so a reader sees progress and a crash leaves a trace. Every
write is fenced by the run's lease token: once the lease is lost, nothing more is written.
"""

import functools
import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict
from uuid import UUID

from marshmallow import ValidationError
from psycopg import Connection
from psycopg.types.json import Jsonb

from ..core import logs, metrics
from ..core.statuses import RunStatus, StepStatus
from ..data import db
from ..data.db import Pool
from ..nodes import BY_NAME as NODE_TYPES
from ..nodes.base import InputRejected, InternalStepError, MustWait, RunCancelled, RunTimedOut, StepFailed
from .budget import BudgetGate, BudgetSettings
from .providers import Provider

log = logging.getLogger("flowline.engine")


class LeaseLost(Exception):
    """The run's lease token no longer matches: another holder took over, or the run was finished elsewhere."""


@dataclass
class Outcome:
    """How an attempt of a run ended: its status, its final output (Succeeded) or its error (Failed, Cancelled)."""

    status: RunStatus
    final_output: str | None = None
    error: StepFailed | None = None
    # Why a Pending outcome went back to the queue: retry (a retryable failure) or budget (waiting for an LLM budget).
    requeued_for: str = "retry"


class NodeRow(TypedDict):
    """A node as a run reads it (``start_sync_run``, ``claim_run``: JSON, so its id is text)."""

    id: str
    position: int
    node_type: str
    # The stored config as text: what _load_config caches its validation by.
    config_json: str


class Step(TypedDict):
    """A step as ``save_run_steps``, ``finish_run`` and ``requeue_run`` write it (the run_steps columns)."""

    node_id: str
    position: int
    node_type: str
    config_snapshot: Any
    status: StepStatus
    started_at: str
    finished_at: str | None
    input_text: str
    output_text: str | None
    error_message: str | None
    note: str | None
    # What an LLM step used (all None for other steps): save_run_steps prices it with llm_models.
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None


@dataclass
class RunContext:
    """Who runs what: the run, its lease, and the process holding it. A node's executor sees it as its NodeContext
    (flowline/nodes/base.py): the input file, the deadline, the provider and ``connection()``."""

    run_id: UUID
    lease_token: UUID
    lease_seconds: float
    deadline: float
    provider: Provider
    pool: Pool | None = None
    # The run's input file: what extract_text nodes without a file_id of their own read.
    input_file_id: UUID | None = None
    # A connection held for the whole run (only when no node waits on the outside world), else None:
    # each write then takes a pooled connection of its own.
    conn: Connection[Any] | None = None
    steps: list[Step] = field(default_factory=list)
    attempt: int = 1
    max_attempts: int = 1
    # Base of the exponential backoff before a retryable failure's next attempt; None: never retried (sync runs).
    retry_backoff_s: float | None = None
    # Set when a write or heartbeat learns that a client asked to cancel: the run stops at its next node boundary.
    cancel_requested: bool = False
    # sync or async: a label of the run metrics.
    mode: str = "async"
    # The holder's id, for log lines (a worker's run threads set theirs for the whole thread).
    worker_id: str | None = None
    # What the node running now reported with record_usage (model, prompt tokens, completion tokens), else None.
    step_usage: tuple[str, int | None, int | None] | None = None
    # What the LLM calls' gates read (flowline/engine/budget.py).
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    # Seconds the run waited for LLM budgets before this claim, and the most it may wait in all (LLM_MAX_BUDGET_WAIT_S).
    waited_s: float = 0.0
    max_wait_s: float = 3600.0
    # When this claim started (time.monotonic()): a wait adds the time since to the attempt's running time, so
    # ASYNC_RUN_TIMEOUT_S counts running time only.
    claimed_at: float = field(default_factory=time.monotonic)

    def connection(self) -> AbstractContextManager[Connection[Any]]:
        """Return a context manager yielding a connection: the run's own, or a pooled one for this write."""
        return nullcontext(self.conn) if self.conn is not None else db.connection(self.pool)

    def record_usage(self, model: str, prompt_tokens: int | None, completion_tokens: int | None) -> None:
        """Keep what the running node used until its step is written (NodeContext.record_usage)."""
        self.step_usage = (model, prompt_tokens, completion_tokens)

    def llm_gate(self, model: str, estimated_tokens: int) -> BudgetGate:
        """Return the gate of one LLM call (NodeContext.llm_gate): the model's budget, shared through the database."""
        return BudgetGate(self, model, estimated_tokens)


def _now() -> str:
    return datetime.now(UTC).isoformat()


# Longest wait between two attempts of an async run.
MAX_RETRY_BACKOFF_S = 300.0


def retry_backoff(base_s: float, attempt: int) -> float:
    """Return the wait before the attempt after ``attempt``: base, then doubling, capped at MAX_RETRY_BACKOFF_S."""
    return min(MAX_RETRY_BACKOFF_S, base_s * 2 ** (attempt - 1))


def _flushed(ctx: RunContext, row: Mapping[str, Any] | None) -> None:
    """Forget the buffered steps once written; raise LeaseLost when the write was fenced off."""
    if row is None or not row["held"]:
        raise LeaseLost(ctx.run_id)
    ctx.steps = []


def renew_lease(conn: Connection[Any], ctx: RunContext, steps: Iterable[Step] = ()) -> bool:
    """Write ``steps`` (none: a heartbeat) and renew the lease; note a client's cancellation request.

    Returns False, writing nothing, when the lease is no longer held.
    """
    row = db.one(
        conn,
        "save_run_steps",
        run_id=ctx.run_id,
        lease_token=ctx.lease_token,
        steps=Jsonb(list(steps)),
        lease_seconds=ctx.lease_seconds,
    )
    if row is None:
        return False
    if row["cancel_requested"]:
        ctx.cancel_requested = True
    return bool(row["held"])


def _save_steps(ctx: RunContext) -> None:
    """Write the buffered steps and renew the lease."""
    with ctx.connection() as conn:
        held = renew_lease(conn, ctx, ctx.steps)
    _flushed(ctx, {"held": held})


def _backoff_before_retry(ctx: RunContext, outcome: Outcome) -> float | None:
    """Return the wait before the next attempt when ``outcome`` is a retryable failure with attempts left, else None."""
    if (
        outcome.status == RunStatus.FAILED
        and outcome.error is not None
        and outcome.error.retryable
        and ctx.retry_backoff_s is not None
        and ctx.attempt < ctx.max_attempts
    ):
        return retry_backoff(ctx.retry_backoff_s, ctx.attempt)
    return None


def _finish(ctx: RunContext, outcome: Outcome, note: str) -> None:
    """Write the buffered steps and the run's outcome, its final event, and release the lease.

    A retryable failure of an attempt that has another goes back to the queue instead: ``outcome.status``
    becomes Pending (or Cancelled, when a client asked meanwhile).
    """
    error_message = None if outcome.error is None or outcome.status == RunStatus.CANCELLED else str(outcome.error)
    backoff = _backoff_before_retry(ctx, outcome)
    with ctx.connection() as conn:
        if backoff is not None:
            row = db.one(
                conn,
                "requeue_run",
                run_id=ctx.run_id,
                lease_token=ctx.lease_token,
                steps=Jsonb(ctx.steps),
                backoff_seconds=backoff,
                error_message=error_message,
                note=f"attempt {ctx.attempt} of {ctx.max_attempts} {note}; retrying in {backoff:g} s",
            )
            if row is not None and row["held"]:
                outcome.status = RunStatus(row["status"])
        else:
            row = db.one(
                conn,
                "finish_run",
                run_id=ctx.run_id,
                lease_token=ctx.lease_token,
                steps=Jsonb(ctx.steps),
                status=outcome.status,
                final_output=outcome.final_output,
                error_message=error_message,
                note=note,
            )
    _flushed(ctx, row)


def _wait(ctx: RunContext, wait: MustWait, index: int, step: Step) -> Outcome:
    """Put the run back in the queue to resume at node ``index`` in ``wait.seconds`` (the same attempt), its step
    recorded as Waiting; or fail it when the wait would take its total past ``ctx.max_wait_s``."""
    total = ctx.waited_s + wait.seconds
    if total > ctx.max_wait_s:
        error = StepFailed(
            f"{wait}: the run would have waited {total:.0f} s in total for LLM budgets, more than "
            f"LLM_MAX_BUDGET_WAIT_S ({ctx.max_wait_s:g} s)"
        )
        step["status"], step["finished_at"], step["error_message"] = StepStatus.FAILED, _now(), str(error)
        ctx.steps.append(step)
        outcome = Outcome(RunStatus.FAILED, error=error)
        _finish(ctx, outcome, f"failed: {error}")
        return outcome
    step["status"], step["note"] = StepStatus.WAITING, str(wait)
    ctx.steps.append(step)
    with ctx.connection() as conn:
        row = db.one(
            conn,
            "wait_run",
            run_id=ctx.run_id,
            lease_token=ctx.lease_token,
            steps=Jsonb(ctx.steps),
            wait_s=wait.seconds,
            resume_index=index,
            model=wait.model,
            ran_s=time.monotonic() - ctx.claimed_at,
            note=f"{wait} (resumes in {wait.seconds:.3g} s at node {index + 1})",
        )
    _flushed(ctx, row)
    assert row is not None
    metrics.budget_waited(wait.model, wait.seconds)
    return Outcome(RunStatus(row["status"]), requeued_for="budget")


def _is_slow(node: NodeRow) -> bool:
    node_type = NODE_TYPES.get(node["node_type"])
    return node_type is not None and node_type.waits_outside


def waits_outside(nodes: Iterable[NodeRow]) -> bool:
    """Return True when one of ``nodes`` waits on the outside world: such a run must not hold a connection."""
    return any(_is_slow(node) for node in nodes)


@functools.lru_cache(maxsize=1024)
def _stored_config(config_json: str) -> Any:
    """Return a node's stored config text parsed; cached like _load_config, and shared too."""
    return json.loads(config_json)


@functools.lru_cache(maxsize=1024)
def _load_config(node_type: str, config_json: str) -> tuple[dict[str, Any], str | None]:
    """Return ``(config, note)``: the config stored as ``config_json`` validated for ``node_type``, defaults
    applied and keys the type does not know left out, and the step note naming those keys (None when none).

    Cached by the stored text: the same node config runs again and again, and validating it each time cost
    more than running a formatter. The returned dict is shared, so executors must not change it.
    :raise InputRejected: when the config is not valid for its type (e.g. written by an older release).
    """
    stored = _stored_config(config_json)
    declared = NODE_TYPES[node_type]
    try:
        config = declared.load_config(stored)
    except ValidationError as exc:
        raise InputRejected(f"invalid config: {exc.normalized_messages()}") from None
    ignored = declared.ignored_keys(stored)
    note = f"config keys not used by {node_type} nodes, ignored: {', '.join(ignored)}" if ignored else None
    return config, note


def _joined(*notes: str | None) -> str | None:
    return "; ".join(note for note in notes if note) or None


def _execute_node(node: NodeRow, text: str, ctx: RunContext) -> tuple[str, str | None]:
    """Return ``(output, note)`` of ``node`` on ``text``; raise StepFailed when it fails."""
    node_type = node["node_type"]
    declared = NODE_TYPES.get(node_type)
    if declared is None:
        raise InputRejected(f"unknown node type {node_type!r}")
    config, ignored_note = _load_config(node_type, node["config_json"])
    try:
        output, note = declared.run(config, text, ctx)
        return output, _joined(note, ignored_note)
    except (StepFailed, MustWait):
        raise
    except Exception:
        log.exception("node %s (%s) of run %s failed with an unexpected error", node["id"], node_type, ctx.run_id)
        raise InternalStepError(f"internal error in the {node_type} node; the server log has the details") from None


def _record_usage(step: Step, ctx: RunContext) -> None:
    """Copy what the node reported with record_usage into its step."""
    if ctx.step_usage is not None:
        step["model"], step["prompt_tokens"], step["completion_tokens"] = ctx.step_usage


def _timed_node(node: NodeRow, text: str, ctx: RunContext) -> tuple[str, str | None]:
    """``_execute_node`` with the node's id on its log lines and its duration in the step metrics."""
    started = time.perf_counter()
    status = StepStatus.FAILED
    try:
        with logs.context(node_id=node["id"]):
            result = _execute_node(node, text, ctx)
        status = StepStatus.SUCCEEDED
        return result
    except MustWait:
        status = StepStatus.WAITING
        raise
    finally:
        metrics.step_finished(node["node_type"], node["node_type"] in NODE_TYPES, status, time.perf_counter() - started)


def execute(ctx: RunContext, nodes: Sequence[NodeRow], text: str, start: int = 0) -> Outcome:
    """``execute_nodes`` with the run's id, attempt and holder on its log lines and its outcome in the metrics."""
    started = time.perf_counter()
    with logs.context(run_id=ctx.run_id, attempt=ctx.attempt, worker_id=ctx.worker_id):
        outcome = execute_nodes(ctx, nodes, text, start)
    metrics.run_finished(ctx.mode, outcome.status, time.perf_counter() - started, outcome.requeued_for)
    return outcome


def execute_nodes(ctx: RunContext, nodes: Sequence[NodeRow], text: str, start: int = 0) -> Outcome:
    """Run ``nodes[start:]`` (dicts with id, position, node_type, config_json: the stored config as text; in
    position order) on ``text`` and record it all; ``start`` > 0 resumes a run that waited for an LLM budget at that
    node, ``text`` being the output of the node before it.

    Returns the Outcome; by the time this returns the run row is finished (Succeeded, Failed or Cancelled) or back
    in the queue (Pending): after a retryable failure with attempts left, or waiting for an LLM budget.
    :raise LeaseLost: when the run's lease was lost (nothing more was written).
    """
    outcome = Outcome(RunStatus.SUCCEEDED)
    for index in range(start, len(nodes)):
        node = nodes[index]
        step = Step(
            node_id=node["id"],
            position=node["position"],
            node_type=node["node_type"],
            config_snapshot=_stored_config(node["config_json"]),
            status=StepStatus.RUNNING,
            started_at=_now(),
            finished_at=None,
            input_text=text,
            output_text=None,
            error_message=None,
            note=None,
            model=None,
            prompt_tokens=None,
            completion_tokens=None,
        )
        ctx.step_usage = None
        if ctx.cancel_requested:
            outcome = Outcome(
                RunStatus.CANCELLED,
                error=RunCancelled(f"cancelled by a client at a node boundary: {index} of {len(nodes)} node(s) ran"),
            )
            break
        if time.monotonic() >= ctx.deadline:
            outcome = Outcome(
                RunStatus.FAILED,
                error=RunTimedOut(f"run timed out before node {index + 1} of {len(nodes)} ({node['node_type']})"),
            )
            break
        if _is_slow(node):
            ctx.steps.append(step.copy())
            _save_steps(ctx)
        try:
            output, note = _timed_node(node, text, ctx)
        except MustWait as wait:
            return _wait(ctx, wait, index, step)
        except StepFailed as exc:
            _record_usage(step, ctx)
            step["status"] = StepStatus.FAILED
            step["finished_at"] = _now()
            step["error_message"] = str(exc)
            ctx.steps.append(step)
            outcome = Outcome(RunStatus.FAILED, error=exc)
            break
        _record_usage(step, ctx)
        step["status"] = StepStatus.SUCCEEDED
        step["finished_at"] = _now()
        step["output_text"] = output
        step["note"] = note
        ctx.steps.append(step)
        text = output
        if _is_slow(node) and index + 1 < len(nodes):
            # Show the slow node's result now, and learn whether a client cancelled the run meanwhile.
            _save_steps(ctx)
    else:
        outcome.final_output = text

    if outcome.status == RunStatus.SUCCEEDED:
        note = f"succeeded after {len(nodes)} step(s)"
    elif outcome.status == RunStatus.CANCELLED:
        note = str(outcome.error)
    else:
        note = f"failed: {outcome.error}"
    _finish(ctx, outcome, note)
    return outcome


def run_sync(
    pool: Pool,
    workflow_id: UUID,
    input_text: str,
    *,
    timeout_s: float,
    lease_seconds: float,
    provider: Provider,
    worker_id: str,
    budget: BudgetSettings,
    input_file_id: UUID | None = None,
) -> tuple[UUID, Outcome] | None:
    """Create a sync run of ``workflow_id`` and execute it now, bounded by ``timeout_s``.

    The run holds a lease long enough to outlive the time bound, so if this process dies mid-run the
    expired-lease sweep can mark it Failed. It waits for its LLM budgets here, within ``timeout_s`` (``budget``: the
    settings its gates read). When every node is fast, one pooled connection serves the whole
    run; a run with a slow node gives its connection back while it waits. Returns ``(run_id, Outcome)``, or
    None for an unknown workflow.
    """
    lease_token = uuid.uuid4()
    lease_seconds = timeout_s + lease_seconds
    with db.connection(pool) as conn:
        row = db.one(
            conn,
            "start_sync_run",
            workflow_id=workflow_id,
            input=Jsonb({"input_text": input_text, "file_id": input_file_id and str(input_file_id)}),
            lease_token=lease_token,
            lease_seconds=lease_seconds,
            worker_id=worker_id,
        )
        if row is None:
            return None
        ctx = RunContext(
            run_id=row["id"],
            lease_token=lease_token,
            lease_seconds=lease_seconds,
            deadline=time.monotonic() + timeout_s,
            provider=provider,
            pool=pool,
            input_file_id=input_file_id,
            mode="sync",
            worker_id=worker_id,
            budget=budget,
        )
        if not waits_outside(row["nodes"]):
            ctx.conn = conn
            return row["id"], execute(ctx, row["nodes"], input_text)
    # A slow node: the connection went back to the pool, and each write takes one while the run waits.
    return row["id"], execute(ctx, row["nodes"], input_text)
