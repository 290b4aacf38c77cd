"""LLM budgets: what a generative_ai step's call passes before and after each HTTP attempt (nodes/base.py's
CallGate), so that a model's per-minute budget (llm_models) and its pause after a provider's 429 hold across every
worker and API process.

Before an attempt, ``reserve_llm_call`` (migration 0018) reserves one request and the call's estimated tokens in
the model's sliding window (``WINDOW_S``: a minute and a margin, so that the provider, which sees each request a
few milliseconds after its reservation, never counts more than the budget in any 60 seconds), or answers how long
to wait. A queued run then goes back to the queue (MustWait: the runner records it); a sync run sleeps here, within
its deadline. After the answer the reservation is corrected to the tokens the provider reported.

A 429 pauses the model for the provider's Retry-After (capped by LLM_MAX_RETRY_AFTER_S; ``DEFAULT_PAUSE_S`` without
one); once the pause is over, one request at a time probes it (holding the probe for ``probe_s``) until one is
answered.
"""

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core import metrics
from ..data import db
from ..nodes.base import InputRejected, MustWait, RunTimedOut

if TYPE_CHECKING:
    from ..core.config import Settings
    from .runner import RunContext

log = logging.getLogger("flowline.budget")

# The window reservations are summed over: 60 s, and a margin for the time from a reservation to the provider.
WINDOW_S = 61.0
# The pause after a 429 that names no Retry-After.
DEFAULT_PAUSE_S = 5.0


@dataclass(frozen=True)
class BudgetSettings:
    """The settings a run's gates read: LLM_MAX_RETRY_AFTER_S, and the time a probe holds a paused model
    (LLM_TIMEOUT_S: one attempt's longest)."""

    max_retry_after_s: float = 600.0
    probe_s: float = 30.0


def budget_settings(config: "Settings") -> BudgetSettings:
    """Return the budget settings of ``config``."""
    return BudgetSettings(max_retry_after_s=config.llm_max_retry_after_s, probe_s=config.llm_timeout_s)


class BudgetGate:
    """One LLM call's gate (nodes/base.py CallGate), made by ``RunContext.llm_gate``."""

    def __init__(self, ctx: "RunContext", model: str, estimated_tokens: int) -> None:
        self.ctx = ctx
        self.model = model
        self.estimated_tokens = estimated_tokens
        # The current attempt's reservation (None: the model has no budget) and whether it probes a paused model.
        self.reservation_id: int | None = None
        self.probing = False

    def _reserve(self) -> dict[str, Any]:
        with self.ctx.connection() as conn:
            row = db.one(
                conn,
                "reserve_llm_call",
                model=self.model,
                tokens=self.estimated_tokens,
                run_id=self.ctx.run_id,
                window_s=WINDOW_S,
                probe_s=self.ctx.budget.probe_s,
            )
        assert row is not None  # the function always answers one row
        return row

    def before_attempt(self) -> None:
        """Reserve the attempt (nodes/base.py CallGate.before_attempt)."""
        while True:
            row = self._reserve()
            reason = row["reason"]
            if reason == "go":
                self.reservation_id, self.probing = row["reservation_id"], row["probe"]
                return
            if reason == "never fits":
                raise InputRejected(
                    f"the call's estimated {self.estimated_tokens} tokens (prompt characters / 4 + max_tokens) can "
                    f"never fit {self.model}'s budget of {row['tokens_per_minute']} tokens per minute; not sent"
                )
            if reason == "max_tokens_per_run":
                raise InputRejected(
                    f"the call's estimated {self.estimated_tokens} tokens would take the run past its workflow's "
                    f"max_tokens_per_run ({row['run_limit']}; {row['run_tokens']} used so far); not sent"
                )
            self._wait(reason, float(row["wait_s"]))

    def _wait(self, reason: str, seconds: float) -> None:
        """Wait ``seconds`` for ``reason``: raise MustWait for a queued run; a sync run sleeps them, within its
        deadline (its wake-up was staggered after the model's other waiters, as a queued run's is)."""
        if self.ctx.mode != "sync":
            raise MustWait(self.model, reason, seconds)
        if time.monotonic() + seconds >= self.ctx.deadline:
            raise RunTimedOut(
                f"run timed out waiting for {self.model}: {reason} (room in {seconds:.3g} s, after the run's deadline)"
            )
        metrics.budget_waited(self.model, seconds)
        time.sleep(seconds)

    def answered(self, prompt_tokens: int | None, completion_tokens: int | None) -> None:
        """Correct the reservation to the reported usage; end a probe (nodes/base.py CallGate.answered)."""
        if self.reservation_id is not None and prompt_tokens is not None and completion_tokens is not None:
            with self.ctx.connection() as conn:
                db.execute(
                    conn,
                    "correct_llm_reservation",
                    reservation_id=self.reservation_id,
                    tokens=prompt_tokens + completion_tokens,
                )
        self._end_probe(answered=True)

    def rate_limited(self, retry_after: float | None) -> None:
        """Pause the model after a 429 (nodes/base.py CallGate.rate_limited)."""
        pause = DEFAULT_PAUSE_S if retry_after is None else min(retry_after, self.ctx.budget.max_retry_after_s)
        self.probing = False
        with self.ctx.connection() as conn:
            db.execute(conn, "pause_llm_model", model=self.model, pause_s=pause)
        if self.ctx.mode != "sync":
            self._wait("rate limited by the provider (429)", pause)

    def failed(self) -> None:
        """Let another request probe (nodes/base.py CallGate.failed)."""
        self._end_probe(answered=False)

    def _end_probe(self, *, answered: bool) -> None:
        if self.probing:
            self.probing = False
            with self.ctx.connection() as conn:
                db.execute(conn, "end_llm_probe", model=self.model, answered=answered)
