"""What a node type declares about itself, in one value (``NodeType``), and how its executor fails (``StepFailed``
and its kinds, each with the HTTP status of a sync run that ends with it; the engine records them)."""

from collections.abc import Callable
from dataclasses import dataclass

from marshmallow import EXCLUDE, RAISE, Schema

# An executor: (config loaded with defaults, input text, the run's context) -> (output text, step note or None).
# It raises StepFailed (or a subclass) when the node cannot produce its output.
Executor = Callable[[dict, str, object], tuple[str, str | None]]


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

    def load_config(self, config: dict, *, strict: bool = False) -> dict:
        """Return ``config`` validated, defaults applied, keys this type does not know left out (``strict``: refused).

        :raise marshmallow.ValidationError: a known key's value is invalid, or (``strict``) a key is unknown.
        """
        return self.config_schema.load(config, unknown=RAISE if strict else EXCLUDE)

    def ignored_keys(self, config: dict) -> list[str]:
        """Return the keys of ``config`` this type does not know, in the order sent: kept, never used."""
        known = self.config_schema.fields
        return [key for key in config if key not in known]

    def files(self, config: dict) -> list[tuple[str, str]]:
        """Return ``(key, file id)`` for each uploaded file a stored ``config`` names."""
        return [(key, config[key]) for key in self.file_keys if config.get(key) is not None]


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
