"""The statuses of runs and of their steps, as the database's CHECK constraints allow them (migration 0001)."""

PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED = "Pending", "Running", "Succeeded", "Failed", "Cancelled"
RUN_STATUSES = (PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED)
# A run in one of these is done: never claimed again, exported, prunable.
FINISHED_STATUSES = (SUCCEEDED, FAILED, CANCELLED)
