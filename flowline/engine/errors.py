"""What can go wrong in a run: a node's failure (StepFailed and its kinds, each with the HTTP status of a sync
run that ends with it) and a lost lease. Node types raise these; the engine records them."""


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


class LeaseLost(Exception):
    """The run's lease token no longer matches: another holder took over, or the run was finished elsewhere."""
