"""History partitions for tests that write runs in the past: run_steps and run_events are partitioned by their
run's created_at (migration 0022) and the template database has partitions from the week it was made on only."""


def make_partitions_back(sql, days):
    """Make the weekly history partitions holding every moment of the last ``days`` days, as a worker or an import
    would (make_history_partition)."""
    sql.execute(
        "SELECT make_history_partition(now() - make_interval(days => d), 'week') "
        "FROM generate_series(0, %(days)s + 7, 7) AS d",
        {"days": days},
    )
