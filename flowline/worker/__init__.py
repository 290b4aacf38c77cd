"""The async run worker: ``flask --app app worker [--concurrency N]`` or ``python -m flowline.worker``.

process.py holds the Worker (its threads, the claim loop, its life cycle); listener.py, lease_renewal.py,
sweep.py and heartbeat.py one background duty each; cli.py the two commands.

The runs table is the queue. Each of the worker's N threads claims the oldest available Pending run with one
``UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED LIMIT 1)``, executes it with the same engine as the sync
route, and claims again until the queue is empty; then it waits for a NOTIFY (sent by the enqueuing transaction
and received on a dedicated LISTEN connection, not a pooled one) or, at most, WORKER_POLL_INTERVAL_S.

Threads, not processes, because a run mostly waits (on PostgreSQL or an LLM provider): threads share one pool,
one LISTEN connection and one maintenance loop. For more CPU, start more worker processes (on any host).

A maintenance thread renews the lease of every run in progress (so a run outliving RUN_LEASE_SECONDS keeps it)
and sweeps runs whose holder stopped renewing (a worker killed, paused or cut off): they are re-queued or failed.
Every write by a run's holder is fenced by its lease token, so a holder that was declared dead and wakes up
changes nothing and stops.

SIGTERM or SIGINT: stop claiming, finish the runs in progress, exit 0. A second signal, or runs still going after
WORKER_DRAIN_TIMEOUT_S, exits at once (status 1) and leaves those runs to the lease sweep.
"""
