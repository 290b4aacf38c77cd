#!/usr/bin/env python3
"""Flowline's webhook benchmark: run finished -> receiver got it, p50/p99 with idle workers, and deliveries per
second with 4 worker processes.

    .venv/bin/python -m bench.webhook_bench [--latency-samples 200] [--deliveries 3000]

1. Without DATABASE_URL it re-executes itself under ``scripts/with_pg.sh`` (a private throwaway PostgreSQL).
2. A loopback receiver in this process answers 204 at once and notes when each delivery arrived (wall clock).
   The workers run with WEBHOOK_ALLOW_PRIVATE=1 (the receiver is on 127.0.0.1) and the default
   WEBHOOK_CONCURRENCY (2 delivery threads each).
3. Latency: one idle worker; async runs of a one-formatter-node workflow with one subscription, queued one at a
   time, each waited for at the receiver before the next. Latency = arrival at the receiver - the run's
   finished_at (PostgreSQL's clock; same host): the trigger's outbox row, the NOTIFY on commit, a delivery
   thread's wake-up, claim, signing, the POST.
4. Throughput: 4 idle worker processes; ``--deliveries`` runs made final in one statement (the trigger writes
   one delivery each), then deliveries/s = deliveries / (last delivered_at - that statement's commit). Every
   delivery must end Delivered after one attempt.

It prints the machine and the numbers, and writes bench/results/webhooks-<timestamp>.json.
"""

import argparse
import json
import os
import statistics
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg

from bench import machine, support
from bench.queue_bench import enqueue, one_node_workflow
from bench.support import RESULTS, Database, running_workers, say
from tests.support import wait_for

WORKER_ENV = {"WEBHOOK_ALLOW_PRIVATE": "1", "WORKER_POLL_INTERVAL_S": "1"}


class Receiver:
    """A loopback HTTP server answering 204; ``arrivals`` maps webhook-id to the wall-clock time it first came."""

    def __init__(self):
        self.arrivals = {}
        self.count = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                at = time.time()
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.arrivals.setdefault(self.headers["webhook-id"], at)
                    receiver.count += 1
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 128
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def subscribe(conn, workflow_id, url):
    conn.execute(
        "INSERT INTO webhooks (workflow_id, url, events, secret) VALUES (%s, %s, ARRAY['run.succeeded'], %s)",
        (workflow_id, url, "whsec_" + "A" * 43 + "="),
    )


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def latency(server_url, samples, receiver, log_dir):
    with Database(server_url) as database, database.connect() as conn:
        workflow_id = one_node_workflow(conn)
        subscribe(conn, workflow_id, receiver.url)
        with running_workers(database.url, 1, log_dir / "latency", env=WORKER_ENV):
            time.sleep(2)  # the worker's start-up, LISTEN included
            measured = []
            for i in range(samples):
                run_id = enqueue(conn, workflow_id, f"run {i}")
                wait_for(
                    lambda run_id=run_id: conn.execute(
                        "SELECT 1 FROM webhook_deliveries WHERE run_id = %s AND status = 'Delivered'", (run_id,)
                    ).fetchone(),
                    30,
                    message=f"the delivery of run {i}",
                )
                row = conn.execute(
                    """SELECT d.id::text AS id, extract(epoch FROM r.finished_at) AS finished
                       FROM webhook_deliveries d JOIN runs r ON r.id = d.run_id WHERE r.id = %s""",
                    (run_id,),
                ).fetchone()
                measured.append((receiver.arrivals[row["id"]] - float(row["finished"])) * 1000)
    return {
        "samples": samples,
        "p50_ms": round(statistics.median(measured), 2),
        "p99_ms": round(percentile(measured, 99), 2),
        "max_ms": round(max(measured), 2),
    }


def throughput(server_url, deliveries, workers, receiver, log_dir):
    with Database(server_url) as database, database.connect() as conn:
        workflow_id = one_node_workflow(conn)
        subscribe(conn, workflow_id, receiver.url)
        conn.execute(
            """INSERT INTO runs (workflow_id, mode, status, input, attempt, started_at, lease_token, lease_expires_at)
               SELECT %s, 'async', 'Running', '{"input_text": "x"}', 1, now(), gen_random_uuid(),
                      now() + interval '1 hour'
               FROM generate_series(1, %s)""",
            (workflow_id, deliveries),
        )
        with running_workers(database.url, workers, log_dir / f"throughput-{workers}", env=WORKER_ENV):
            time.sleep(3)  # every worker up and listening
            started = conn.execute(
                """WITH done AS (UPDATE runs SET status = 'Succeeded', final_output = 'X', finished_at = now(),
                                                lease_token = NULL, lease_expires_at = NULL
                                 RETURNING 1)
                   SELECT count(*) AS n, extract(epoch FROM clock_timestamp()) AS at FROM done"""
            ).fetchone()
            wait_for(
                lambda: (
                    conn.execute("SELECT count(*) AS n FROM webhook_deliveries WHERE status = 'Delivered'").fetchone()[
                        "n"
                    ]
                    == deliveries
                ),
                600,
                message=f"{deliveries} deliveries",
            )
        row = conn.execute(
            """SELECT count(*) FILTER (WHERE attempts = 1) AS first_time, count(*) AS total,
                      extract(epoch FROM max(finished_at)) AS last FROM webhook_deliveries"""
        ).fetchone()
    if row["first_time"] != deliveries or row["total"] != deliveries:
        raise RuntimeError(f"{row['first_time']} of {row['total']} deliveries made at their first attempt")
    seconds = float(row["last"]) - float(started["at"])
    return {
        "workers": workers,
        "deliveries": deliveries,
        "seconds": round(seconds, 2),
        "deliveries_per_s": round(deliveries / seconds, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--deliveries", type=int, default=3000)
    args = parser.parse_args()
    server_url = support.server_url()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log_dir = RESULTS / f"webhooks-{stamp}-logs"
    with psycopg.connect(server_url, autocommit=True) as conn:
        facts = machine.facts(conn)
    receiver = Receiver()
    results_load = {"load_average_before": os.getloadavg()}
    say(f"latency: {args.latency_samples} runs one at a time, one idle worker ...")
    results = {"machine": facts, "latency": latency(server_url, args.latency_samples, receiver, log_dir)}
    say(f"throughput: {args.deliveries} deliveries, 4 worker processes ...")
    results["throughput"] = throughput(server_url, args.deliveries, 4, receiver, log_dir)
    results.update(results_load, load_average_after=os.getloadavg())
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"webhooks-{stamp}.json").write_text(json.dumps(results, indent=2, default=str))
    report(results)


def report(results):
    print(machine.describe(results["machine"], "workers, server, receiver and this script"))
    lat, put = results["latency"], results["throughput"]
    before, after = results["load_average_before"], results["load_average_after"]
    print(f"load avg    {before[0]:.2f} before, {after[0]:.2f} after (1 min; other work on the machine shows here)")
    print()
    print(
        f"run finished -> receiver got it, one idle worker ({lat['samples']} runs): p50 {lat['p50_ms']} ms, "
        f"p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms"
    )
    print(
        f"throughput, {put['workers']} worker processes x 2 delivery threads: {put['deliveries']} deliveries in "
        f"{put['seconds']} s = {put['deliveries_per_s']:,.1f} deliveries/s"
    )


if __name__ == "__main__":
    main()
