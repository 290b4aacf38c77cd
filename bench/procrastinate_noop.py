#!/usr/bin/env python3
"""How many no-op jobs per second procrastinate (a PostgreSQL task queue) runs on this machine.

    python3 -m bench.procrastinate_noop --database-url URL [--jobs 5000] [--workers 4] [--concurrency 1]

A yardstick for Flowline's own queue, run from the repository root (bench/queue_bench.py runs it). procrastinate
is never a Flowline dependency: run with any Python 3.11, the script installs the pinned versions below into the
throwaway virtualenv /tmp/flowline-bench-procrastinate (when it is missing or holds other versions) and re-executes
itself with that virtualenv's Python, as the same module.
psycopg is pinned to the version Flowline uses, so both queues talk to PostgreSQL through the same driver.

URL is a libpq URL of an empty database the script may use freely, e.g.
``postgresql://postgres@/bench_procrastinate?host=/tmp/pgsock&port=5432``.

Method:

1. Apply procrastinate's schema to the database (``SchemaManager.apply_schema_async``, what
   ``procrastinate schema --apply`` runs) and batch-defer ``--jobs`` jobs of one async no-op task
   (``Task.batch_defer_async``, one statement per chunk), then ANALYZE the jobs table. Deferring is not timed.
   Without the ANALYZE the planner, knowing nothing of the freshly filled table, fetches each job by sorting
   every waiting one (milliseconds per fetch at a few thousand jobs); autovacuum would analyze it within a
   minute in production, too late for a run of seconds.
2. Start ``--workers`` OS processes. Each imports procrastinate, opens its connection pool, and waits at a
   barrier; only once all of them are ready does any of them start its worker (``App.run_worker_async`` with
   ``wait=False``: it returns once the queue is empty, and ``--concurrency`` jobs at a time). Python start-up
   and connecting are thus outside the measured span.
3. When every worker has exited, the script checks that all jobs have status ``succeeded`` and reads the
   span from the database: procrastinate's triggers write one ``procrastinate_events`` row per status
   change, stamped with the transaction's ``now()``. The span runs from the first ``started`` event (the
   first job fetched) to the last ``succeeded`` event (the last job finished), so it covers every job from
   fetch to completion and excludes worker start-up and shut-down. jobs_per_s = jobs / span.

Progress goes to stderr; stdout gets exactly one JSON line:
``{"queue": "procrastinate", "version": ..., "jobs": N, "workers": W, "concurrency": C, "seconds": S,
"jobs_per_s": X}``. Worker processes are stopped on every exit, Ctrl-C and SIGTERM included.
"""

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

VENV = Path("/tmp/flowline-bench-procrastinate")
PINS = {"procrastinate": "3.10.0", "psycopg": "3.3.9", "psycopg-binary": "3.3.9"}
TASK_NAME = "noop"
DEFER_CHUNK = 5000
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 5.0


def log(message):
    print(f"procrastinate_noop: {message}", file=sys.stderr, flush=True)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--database-url", required=True, help="libpq URL of an empty database")
    parser.add_argument("--jobs", type=int, default=5000, help="no-op jobs to run (default 5000)")
    parser.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    parser.add_argument("--concurrency", type=int, default=1, help="jobs at a time per worker (default 1)")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds the workers may take before the run fails (default 600)"
    )
    args = parser.parse_args()
    for name in ("jobs", "workers", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def ensure_venv_and_reexec():
    """Unless already in VENV: create it or install PINS into it as needed, then re-execute in it."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    python = VENV / "bin" / "python"
    check = (
        "import importlib.metadata as m, json, sys\n"
        "def version(name):\n"
        "    try:\n"
        "        return m.version(name)\n"
        "    except m.PackageNotFoundError:\n"
        "        return None\n"
        "sys.exit(any(version(n) != v for n, v in json.loads(sys.argv[1]).items()))\n"
    )
    if not python.exists():
        log(f"creating virtualenv {VENV}")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, stdout=sys.stderr)
    if subprocess.run([str(python), "-c", check, json.dumps(PINS)]).returncode != 0:
        requirements = [f"{name}=={version}" for name, version in PINS.items()]
        log(f"installing {' '.join(requirements)} into {VENV}")
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements],
            check=True,
            stdout=sys.stderr,
        )
    os.execv(str(python), [str(python), "-m", __spec__.name, *sys.argv[1:]])


def make_app(database_url):
    import procrastinate

    # procrastinate warns about an App built in __main__, where a task's default name would differ between
    # processes; the task below is named explicitly, so every process agrees on it.
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=database_url))

    @app.task(name=TASK_NAME)
    async def noop():
        pass

    return app


async def prepare(database_url, jobs):
    app = make_app(database_url)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        task = app.tasks[TASK_NAME]
        for start in range(0, jobs, DEFER_CHUNK):
            await task.batch_defer_async(*({} for _ in range(start, min(start + DEFER_CHUNK, jobs))))
        await app.connector.execute_query_async(query="ANALYZE procrastinate_jobs")


def worker_process(database_url, concurrency, barrier):
    """One worker: connect, wait until all workers are ready, run the queue until it is empty."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the workers

    async def run():
        app = make_app(database_url)
        async with app.open_async():
            await asyncio.to_thread(barrier.wait, READY_TIMEOUT_S)
            await app.run_worker_async(concurrency=concurrency, wait=False, install_signal_handlers=False)

    asyncio.run(run())


def run_workers(args):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(args.workers + 1)
    procs = [
        ctx.Process(
            target=worker_process, args=(args.database_url, args.concurrency, barrier), name=f"procrastinate-worker-{i}"
        )
        for i in range(args.workers)
    ]
    try:
        for proc in procs:
            proc.start()
        try:
            barrier.wait(READY_TIMEOUT_S)
        except threading.BrokenBarrierError:
            raise SystemExit(
                f"procrastinate_noop: the workers were not all ready within {READY_TIMEOUT_S:g}s"
            ) from None
        started = time.monotonic()
        log(f"{args.workers} worker(s) ready, running")
        deadline = started + args.timeout
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.exitcode is None:
                raise SystemExit(f"procrastinate_noop: workers still running after {args.timeout:g}s")
            if proc.exitcode != 0:
                raise SystemExit(f"procrastinate_noop: {proc.name} exited with status {proc.exitcode}")
        log(f"all workers exited after {time.monotonic() - started:.2f}s (wall clock, shutdown included)")
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(STOP_TIMEOUT_S)
            if proc.is_alive():
                proc.kill()
                proc.join()


def measure(database_url, jobs):
    import psycopg

    with psycopg.connect(database_url) as conn:
        succeeded, total = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FROM procrastinate_jobs"
        ).fetchone()
        if (succeeded, total) != (jobs, jobs):
            raise SystemExit(f"procrastinate_noop: {succeeded} of {total} jobs succeeded, expected {jobs}")
        (seconds,) = conn.execute(
            "SELECT extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')"
            " - min(at) FILTER (WHERE type = 'started')) FROM procrastinate_events"
        ).fetchone()
    return float(seconds)


def main():
    args = parse_args()
    ensure_venv_and_reexec()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    from importlib.metadata import version

    import psycopg

    try:
        psycopg.connect(args.database_url).close()
    except psycopg.Error as exc:
        raise SystemExit(f"procrastinate_noop: cannot connect to --database-url: {exc}") from exc
    log(f"applying the schema and deferring {args.jobs} jobs")
    asyncio.run(prepare(args.database_url, args.jobs))
    run_workers(args)
    seconds = measure(args.database_url, args.jobs)
    print(
        json.dumps(
            {
                "queue": "procrastinate",
                "version": version("procrastinate"),
                "jobs": args.jobs,
                "workers": args.workers,
                "concurrency": args.concurrency,
                "seconds": round(seconds, 3),
                "jobs_per_s": round(args.jobs / seconds, 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
