"""The statuses of runs, of their steps and of webhook deliveries, as the database's CHECK constraints allow them
(migrations 0001, 0009 and 0018): the one place Flowline's Python names them.

Each is a ``StrEnum``: a member is the string the database stores and the API answers (``RunStatus.SUCCEEDED ==
"Succeeded"``, ``str()`` and JSON give ``Succeeded``), and psycopg sends it as that text. A row read back holds
plain strings, which compare equal to the members.
"""

from enum import StrEnum


class RunStatus(StrEnum):
    """A run's status (``runs_status_valid``), also that of each of its events (``run_events_status_valid``)."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


class StepStatus(StrEnum):
    """A step's status (``run_steps_status_valid``): a run's five, and Waiting, the step of a run that went back to
    the queue to wait for its LLM budget (it resumes at that step, in the same attempt)."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    WAITING = "Waiting"


class DeliveryStatus(StrEnum):
    """A webhook delivery's status (``webhook_deliveries_status_valid``): Delivering while a worker holds its lease."""

    PENDING = "Pending"
    DELIVERING = "Delivering"
    DELIVERED = "Delivered"
    DEAD = "Dead"


RUN_STATUSES: tuple[RunStatus, ...] = tuple(RunStatus)
# A run in one of these is done: never claimed again, exported, prunable.
FINISHED_STATUSES: tuple[RunStatus, ...] = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
# A run in one of these is still in progress: the queue's, cancellable, what a schedule's overlap policy looks at.
ACTIVE_STATUSES: tuple[RunStatus, ...] = (RunStatus.PENDING, RunStatus.RUNNING)

# The webhook events, one per final status (the trigger of migration 0009 names them 'run.' || lower(status)).
WEBHOOK_EVENTS: tuple[str, ...] = tuple(f"run.{status.lower()}" for status in FINISHED_STATUSES)
DELIVERY_STATUSES: tuple[DeliveryStatus, ...] = tuple(DeliveryStatus)
