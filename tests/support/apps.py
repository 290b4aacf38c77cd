"""Apps made in the test process: their shutdown, and running a `flask --app app` command in this process."""

import subprocess


def close_app(app):
    """Close what ``create_app`` opened: the waits' listener, the pool, the LLM provider's client, the replica's."""
    app.extensions["flowline.waits"].close()
    app.extensions["flowline.pool"].close()
    app.extensions["flowline.provider"].close()
    if app.extensions["flowline.replica"] is not None:
        app.extensions["flowline.replica"].close()


def run_command(database_url, *args, stdin=None):
    """Run `flask --app app ARGS` in this process (Click's test runner) on an app of ``database_url``; return it as
    the command's process would have ended: a CompletedProcess with its exit status and its stdout and stderr bytes.

    The same command, its arguments parsed by Click and its output written by it, without the second or so of CPU a
    new interpreter takes to import the app (the tests of the command's own process run it as one)."""
    from app import create_app

    app = create_app({"DATABASE_URL": database_url})
    try:
        result = app.test_cli_runner().invoke(args=list(args), input=stdin)
    finally:
        close_app(app)
    return subprocess.CompletedProcess(
        ["flask", "--app", "app", *args], result.exit_code, result.stdout_bytes, result.stderr_bytes
    )
