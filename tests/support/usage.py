"""LLM steps written as the runner writes them (through save_run_steps), at the times a test chooses: what the
usage tests and the console's usage pages read."""

from psycopg.types.json import Jsonb


def save_llm_steps(sql, run_id, attempt, steps):
    """Save ``steps`` [(model, prompt_tokens, completion_tokens, finished_at)] as attempt ``attempt`` of run
    ``run_id``, through save_run_steps as the runner does."""
    sql.execute(
        "SELECT save_run_steps(%s, %s, %s)",
        (
            run_id,
            attempt,
            Jsonb(
                [
                    {
                        "position": position,
                        "node_type": "generative_ai",
                        "config_snapshot": {},
                        "status": "Succeeded",
                        "started_at": finished_at,
                        "finished_at": finished_at,
                        "model": model,
                        "prompt_tokens": prompt,
                        "completion_tokens": completion_tokens,
                    }
                    for position, (model, prompt, completion_tokens, finished_at) in enumerate(steps)
                ]
            ),
        ),
    )


def add_llm_run(sql, workflow_id, finished_at, attempts):
    """Insert a Succeeded async run of ``workflow_id`` finished at ``finished_at`` whose attempts saved the steps of
    ``attempts`` (one list per attempt, as save_llm_steps takes); return its id. Makes the history partition it
    needs (run_steps is partitioned by its run's created_at) as a worker would."""
    sql.execute("SELECT make_history_partition(%s::timestamptz - interval '1 minute', 'week')", (finished_at,))
    run_id = sql.execute(
        """INSERT INTO runs (workflow_id, mode, status, attempt, created_at, started_at, finished_at)
           VALUES (%s, 'async', 'Succeeded', %s, %s::timestamptz - interval '1 minute',
                   %s::timestamptz - interval '1 minute', %s)
           RETURNING id""",
        (workflow_id, len(attempts), finished_at, finished_at, finished_at),
    ).fetchone()["id"]
    for attempt, steps in enumerate(attempts, start=1):
        save_llm_steps(sql, run_id, attempt, steps)
    return str(run_id)
