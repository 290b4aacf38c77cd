"""The statuses of runs and of their steps, as the database's CHECK constraints allow them (migration 0001)."""

PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED = "Pending", "Running", "Succeeded", "Failed", "Cancelled"
RUN_STATUSES = (PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED)
# A run in one of these is done: never claimed again, exported, prunable.
FINISHED_STATUSES = (SUCCEEDED, FAILED, CANCELLED)

# The webhook events, one per final status (the trigger of migration 0009 names them 'run.' || lower(status)).
WEBHOOK_EVENTS = tuple(f"run.{status.lower()}" for status in FINISHED_STATUSES)
# A webhook delivery's statuses, as migration 0009's CHECK allows them.
DELIVERY_STATUSES = ("Pending", "Delivering", "Delivered", "Dead")
