"""What a node type declares about itself, in one value (``NodeType``), what its executor may use of the run
(``NodeContext``), and how its executor fails (``StepFailed`` and its kinds, each with the HTTP status of a sync run
that ends with it; the engine records them)."""

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

from marshmallow import EXCLUDE, RAISE, Schema
from psycopg import Connection


@dataclass(frozen=True)
class Completion:
    """What an LLM provider answers: the completed text, and what a reader of the run history should know
    (provider, model, tokens, latency)."""

    text: str
    note: str
    # The tokens the provider reported using (None: it reported none).
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class CallGate(Protocol):
    """What a provider tells its run around each HTTP attempt of one LLM call, so the model's per-minute budget
    (shared by every worker through the database) and its pause after a 429 hold (flowline/engine/budget.py)."""

    def before_attempt(self) -> None:
        """Reserve one request and the call's estimated tokens before an HTTP attempt.

        :raise MustWait: a queued run must wait for the budget (it goes back to the queue; a sync run sleeps here
            instead, within its deadline).
        :raise StepFailed: the call can never fit (RunTimedOut: a sync run's deadline comes before the room).
        """
        ...

    def answered(self, prompt_tokens: int | None, completion_tokens: int | None) -> None:
        """The provider answered (not a 429): correct the reservation to the tokens it reported (None: keep the
        estimate), and end the model's pause if this attempt probed it."""
        ...

    def rate_limited(self, retry_after: float | None) -> None:
        """The provider answered 429: pause the model for ``retry_after`` seconds (capped; None: a default).

        :raise MustWait: a queued run waits for the pause (a sync run returns: its next before_attempt waits).
        """
        ...

    def failed(self) -> None:
        """The attempt failed otherwise (5xx, timeout, connection): a probe it made no longer holds the model."""
        ...


class LLMProvider(Protocol):
    """What a node may ask of the run's LLM provider (flowline/engine/providers.py has them)."""

    @property
    def default_model(self) -> str:
        """The model of a node whose config names none (LLM_MODEL)."""
        ...

    def complete(
        self,
        *,
        prompt: str,
        model: str,
        temperature: float,
        max_tokens: int,
        top_p: float,
        timeout: float,
        gate: CallGate,
    ) -> Completion:
        """Return the completion of ``prompt`` by ``model`` within ``timeout`` seconds, passing ``gate`` before and
        after each HTTP attempt.

        :raise ProviderFailed: the provider failed (ProviderUnavailable: worth another attempt).
        :raise RunTimedOut: ``timeout`` ran out first.
        :raise MustWait: the run must wait for the model's budget or its pause after a 429 (from ``gate``).
        """
        ...


class NodeContext(Protocol):
    """What a node's executor may use of the run it is a step of: nothing else (the engine's RunContext has more)."""

    @property
    def input_file_id(self) -> UUID | None:
        """The run's input file (what an extract_text node without a file of its own reads), or None."""
        ...

    @property
    def deadline(self) -> float:
        """The run's time bound, on ``time.monotonic()``'s clock."""
        ...

    @property
    def provider(self) -> LLMProvider:
        """The LLM provider of this process."""
        ...

    def connection(self) -> AbstractContextManager[Connection[Any]]:
        """Return a context manager yielding a database connection (dict rows) for one read."""
        ...

    def record_usage(self, model: str, prompt_tokens: int | None, completion_tokens: int | None) -> None:
        """Record that this step called ``model`` and the tokens the provider reported (None: not reported); the
        step's history keeps them, priced with the model's prices (llm_models) when the step is saved."""
        ...

    def llm_gate(self, model: str, estimated_tokens: int) -> CallGate:
        """Return the gate an LLM call of ``model`` estimated at ``estimated_tokens`` passes around each HTTP attempt
        (its provider's ``complete(gate=...)``)."""
        ...


# An executor: (config loaded with defaults, input text, the run's context) -> (output text, step note or None).
# It raises StepFailed (or a subclass) when the node cannot produce its output. The config is the type's schema's
# load: shared between runs (cached), so an executor never changes it.
Executor = Callable[[Mapping[str, Any], str, NodeContext], tuple[str, str | None]]


@dataclass(frozen=True)
class NodeType:
    """Everything Flowline knows about one node type; flowline/nodes/__init__.py lists them all."""

    # The node_type clients send and the database stores.
    name: str
    # Validates the keys of a config this type knows (keys it does not know are kept, never used).
    config_schema: Schema
    run: Executor
    # True when it waits on the outside world (an LLM call): the engine writes its Running step before it
    # starts and holds no database connection while it waits.
    waits_outside: bool
    # Config keys that name an uploaded file (checked to exist when a node is written; reported by export and import).
    file_keys: tuple[str, ...]
    # OpenAPI: the prefix of its components (<component>Config, <component>NodeCreate) and what it does.
    component: str
    description: str

    def load_config(self, config: Mapping[str, Any], *, strict: bool = False) -> dict[str, Any]:
        """Return ``config`` validated, defaults applied, keys this type does not know left out (``strict``: refused).

        :raise marshmallow.ValidationError: a known key's value is invalid, or (``strict``) a key is unknown.
        """
        return self.config_schema.load(config, unknown=RAISE if strict else EXCLUDE)

    def ignored_keys(self, config: Mapping[str, Any]) -> list[str]:
        """Return the keys of ``config`` this type does not know, in the order sent: kept, never used."""
        known = self.config_schema.fields
        return [key for key in config if key not in known]

    def files(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Return ``(key, file id)`` for each uploaded file a stored ``config`` names."""
        return [(key, config[key]) for key in self.file_keys if config.get(key) is not None]


class MustWait(Exception):
    """The step cannot call its LLM provider now: its queued run goes back to the queue for ``seconds`` (no
    attempt spent) and resumes at this step. The message says what it waits for."""

    def __init__(self, model: str, reason: str, seconds: float) -> None:
        super().__init__(f"waiting for {model}: {reason}")
        self.model = model
        self.reason = reason
        self.seconds = seconds


class StepFailed(Exception):
    """A node could not produce its output; the run fails with this message."""

    http_status = 422
    # True when another attempt may well succeed (an async run is then re-queued with backoff).
    retryable = False


class InputRejected(StepFailed):
    """A node rejected its input or configuration."""

    http_status = 422


class ProviderFailed(StepFailed):
    """An external provider failed or timed out."""

    http_status = 502


class ProviderUnavailable(ProviderFailed):
    """An external provider was overloaded, failing or unreachable (429, 5xx, timeout): worth another attempt."""

    retryable = True


class RunCancelled(StepFailed):
    """A client cancelled the run; it stopped at a node boundary."""

    http_status = 409


class RunTimedOut(StepFailed):
    """The run's time bound was hit."""

    http_status = 504


class InternalStepError(StepFailed):
    """A bug in Flowline failed the node."""

    http_status = 500
