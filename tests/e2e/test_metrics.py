"""GET /metrics and a worker's own metrics endpoint: request series summed over real gunicorn workers, the queue
and the worker heartbeats read from PostgreSQL (cheaply), run and step series from a real worker process, and a
scrape that still answers while the database is down."""

import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import multiprocess
from prometheus_client.parser import text_string_to_metric_families

from flowline.data import sql as sql_files
from flowline.ops import metrics
from tests.support import free_port, wait_for

UPPER = ("formatter", {"rules": ["uppercase"]})
# A unix socket folder with no server in it: connecting fails at once, as when PostgreSQL is down.
DOWN_URL = "postgresql://postgres@/flowline?host=/nonexistent-flowline-socket&connect_timeout=1"


def parse(text):
    """Return ``{(sample name, frozenset of labels): value}`` of a Prometheus text exposition."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def names(samples):
    return {name for name, _ in samples}


def http_get(url, timeout=10, headers=None):
    """Return (status, body text, headers) of a GET."""
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as response:
        return response.status, response.read().decode(), response.headers


def scrape(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return parse(response.get_data(as_text=True))


def per_process(directory, kind, sample, **labels):
    """Return ``{pid: value}`` of one sample as each process wrote it in its own multiprocess file of ``kind``."""
    found = {}
    for path in directory.glob(f"{kind}_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        if path.stat().st_size == 0:
            continue  # a process starting now has made its file but not yet written its header
        for family in multiprocess.MultiProcessCollector.merge([str(path)]):
            for s in family.samples:
                if s.name == sample and s.labels == labels:
                    found[pid] = s.value
    return found


# --- requests, summed over gunicorn's workers ----------------------------------------------------------------------


def test_requests_are_counted_by_route_and_status_summed_over_gunicorn_workers(make_server, database_url, tmp_path):
    server = make_server(database_url, WEB_CONCURRENCY=2)
    directory = tmp_path / "prometheus"
    server.env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    server.start()
    unknown = str(uuid.uuid4())
    livez = {"method": "GET", "route": "/livez", "status": "200"}
    missing = {"method": "GET", "route": "/workflows/<workflow_id>", "status": "404"}

    def get(path):
        try:
            return http_get(server.base + path)[0]
        except urllib.error.HTTPError as error:
            return error.code

    sent = 0
    with ThreadPoolExecutor(8) as threads:
        # Concurrent requests until both gunicorn workers have answered some /livez (each counts in its own file).
        while len(per_process(directory, "counter", "flowline_http_requests_total", **livez)) < 2:
            assert sent < 2000, "one gunicorn worker answered every request"
            assert set(threads.map(get, ["/livez"] * 16)) == {200}
            sent += 16
        assert set(threads.map(get, [f"/workflows/{unknown}"] * 5 + ["/no/such/path"] * 3)) == {404}

    by_worker = per_process(directory, "counter", "flowline_http_requests_total", **livez)
    assert len(by_worker) == 2 and all(by_worker.values()) and sum(by_worker.values()) == sent
    # Whichever worker answers the scrape reports the sum of both.
    for _ in range(6):
        status, text, headers = http_get(server.base + "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        samples = parse(text)
        assert value(samples, "flowline_http_requests_total", **livez) == sent
        assert value(samples, "flowline_http_request_duration_seconds_count", **livez) == sent
        assert value(samples, "flowline_http_request_duration_seconds_bucket", le="+Inf", **livez) == sent
        assert value(samples, "flowline_http_request_duration_seconds_sum", **livez) > 0
        assert value(samples, "flowline_http_requests_total", **missing) == 5
        assert value(samples, "flowline_http_requests_total", method="GET", route="unmatched", status="404") == 3
        # The route label is the URL rule: no raw path (and so no id) becomes a label.
        assert unknown not in text and "/no/such/path" not in text
        # Each worker's pool (under gunicorn DB_POOL_MAX_SIZE defaults to its 2 threads): summed over the live workers.
        assert value(samples, "flowline_db_pool_max_connections", pool="flowline") == 4
    server.stop()


def test_a_dead_gunicorn_workers_gauges_go_but_its_counts_stay(make_server, database_url, tmp_path):
    server = make_server(database_url, WEB_CONCURRENCY=2)
    directory = tmp_path / "prometheus"
    server.env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    server.start()
    livez = {"method": "GET", "route": "/livez", "status": "200"}

    def pool_gauges():
        return per_process(directory, "gauge_livesum", "flowline_db_pool_max_connections", pool="flowline")

    def both_answered():
        for _ in range(16):
            http_get(server.base + "/livez")
        return len(pool_gauges()) == 2

    wait_for(both_answered, timeout=120, interval=0, message="both gunicorn workers to answer")
    counted = value(parse(http_get(server.base + "/metrics")[1]), "flowline_http_requests_total", **livez)
    before = set(pool_gauges())
    victim = min(before)
    os.kill(victim, signal.SIGKILL)

    def replaced():
        http_get(server.base + "/livez")
        return set(pool_gauges()) - before

    wait_for(replaced, timeout=60, message="gunicorn to replace the killed worker")

    assert victim not in pool_gauges(), "child_exit must drop a dead worker's live gauges"
    samples = parse(http_get(server.base + "/metrics")[1])
    assert value(samples, "flowline_db_pool_max_connections", pool="flowline") == 4
    assert value(samples, "flowline_http_requests_total", **livez) >= counted
    server.stop()


def test_without_a_directory_gunicorn_uses_a_private_one_and_removes_it(make_server, database_url, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    # Left behind by a gunicorn master killed with SIGKILL (its pid no longer runs), and one of a running master.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphaned, running = tmp / f"flowline-metrics-{gone.pid}-abc", tmp / f"flowline-metrics-{os.getpid()}-abc"
    orphaned.mkdir()
    running.mkdir()
    server = make_server(database_url, TMPDIR=str(tmp))
    server.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server.start()
    (private,) = [p for p in tmp.glob("flowline-metrics-*") if p != running]
    assert private.name.startswith(f"flowline-metrics-{server.process.pid}-")
    http_get(server.base + "/livez")
    assert list(private.glob("counter_*.db"))
    server.stop()
    assert sorted(tmp.iterdir()) == [running]


def test_route_and_method_labels_stay_bounded(client):
    before = scrape(client)
    assert client.open("/livez", method="BREW").status_code == 405
    assert client.get(f"/runs/{uuid.uuid4()}").status_code == 404
    after = scrape(client)

    def delta(**labels):
        return (value(after, "flowline_http_requests_total", **labels) or 0) - (
            value(before, "flowline_http_requests_total", **labels) or 0
        )

    assert delta(method="other", route="unmatched", status="405") == 1
    assert delta(method="GET", route="/runs/<run_id>", status="404") == 1
    assert not any(dict(labels).get("method") == "BREW" for _, labels in after)


# --- the queue, read from PostgreSQL --------------------------------------------------------------------------------


def queue(client, workflow_id):
    response = client.post(f"/workflows/{workflow_id}/runs", json={"input_text": "hello"})
    assert response.status_code == 202, response.json
    return response.json["run_id"]


def test_queue_depth_and_oldest_pending_age_follow_the_queued_runs(client, workflow, sql, monkeypatch):
    samples = scrape(client)
    assert value(samples, "flowline_database_up") == 1
    assert value(samples, "flowline_runs", status="Pending") == 0
    assert value(samples, "flowline_queue_depth") == 0
    assert value(samples, "flowline_queue_oldest_pending_age_seconds") == 0

    workflow_id = workflow([UPPER])
    oldest, _waiting, backing_off, running = (queue(client, workflow_id) for _ in range(4))
    sql.execute("UPDATE runs SET available_at = now() - interval '120 seconds' WHERE id = %s", (oldest,))
    # One waits out a retry backoff, one is held by a worker: neither may be claimed now.
    sql.execute("UPDATE runs SET available_at = now() + interval '1 hour' WHERE id = %s", (backing_off,))
    sql.execute(
        "UPDATE runs SET status = 'Running', attempt = 1, lease_token = gen_random_uuid(), "
        "lease_expires_at = now() + interval '1 minute', started_at = now() WHERE id = %s",
        (running,),
    )

    samples = scrape(client)
    assert value(samples, "flowline_runs", status="Pending") == 3
    assert value(samples, "flowline_runs", status="Running") == 1
    assert value(samples, "flowline_queue_depth") == 2
    assert 120 <= value(samples, "flowline_queue_oldest_pending_age_seconds") < 3600

    # Counting stops at the cap, whatever the queue's length.
    monkeypatch.setattr(metrics, "COUNT_CAP", 2)
    samples = scrape(client)
    assert value(samples, "flowline_runs", status="Pending") == 2
    assert value(samples, "flowline_queue_depth") == 2


def _plan_nodes(plan):
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


def test_queue_queries_read_the_partial_indexes_not_the_history(client, workflow, sql):
    workflow_id = workflow([UPPER])
    for _ in range(3):
        queue(client, workflow_id)
    # A long history: 20,000 finished runs beside a queue of three.
    sql.execute(
        "INSERT INTO runs (workflow_id, mode, status, attempt, created_at, started_at, finished_at) "
        "SELECT %s, 'async', 'Succeeded', 1, now(), now(), now() FROM generate_series(1, 20000)",
        (workflow_id,),
    )
    sql.execute("ANALYZE runs")
    (row,) = sql.execute(
        "EXPLAIN (FORMAT JSON) " + sql_files.QUERIES["get_queue_stats"].text, {"count_cap": metrics.COUNT_CAP}
    ).fetchall()
    nodes = list(_plan_nodes(row["QUERY PLAN"][0]["Plan"]))
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], row["QUERY PLAN"]
    indexes = {n["Index Name"]: n for n in nodes if "Index Name" in n}
    assert "runs_pending_queue_idx" in indexes, row["QUERY PLAN"]
    # The Running count may read runs_status_created_idx (GET /runs's, migration 0008) instead of
    # runs_running_lease_idx: only its Running entries, no more than the partial index holds.
    assert set(indexes) <= {"runs_pending_queue_idx", "runs_running_lease_idx", "runs_status_created_idx"}
    if "runs_status_created_idx" in indexes:
        assert "status = 'Running'" in indexes["runs_status_created_idx"]["Index Cond"], row["QUERY PLAN"]


# --- run and step series from a worker, heartbeats through the API --------------------------------------------------


def test_a_worker_serves_its_run_and_step_series_and_its_heartbeat_reaches_the_api(
    make_worker, client, workflow, failing_workflow, sql
):
    port = free_port()
    # A short lease: the worker renews leases and records its heartbeat every second.
    worker = make_worker(WORKER_METRICS_PORT=port, RUN_LEASE_SECONDS=3).start()
    worker_id = f"{socket.gethostname()}:{worker.pid}"
    good = workflow([UPPER, ("formatter", {"rules": ["strip"]})])
    bad, _ = failing_workflow()
    run_ids = [queue(client, good), queue(client, good), queue(client, bad)]

    def finished():
        rows = sql.execute("SELECT status FROM runs WHERE id = ANY(%s::uuid[])", (run_ids,)).fetchall()
        return sorted(r["status"] for r in rows) == ["Failed", "Succeeded", "Succeeded"]

    wait_for(finished, message="the worker to finish the runs")
    status, text, _ = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    samples = parse(text)
    assert value(samples, "flowline_runs_finished_total", mode="async", status="Succeeded") == 2
    assert value(samples, "flowline_runs_finished_total", mode="async", status="Failed") == 1
    assert value(samples, "flowline_run_duration_seconds_count", mode="async", status="Succeeded") == 2
    assert value(samples, "flowline_run_duration_seconds_count", mode="async", status="Failed") == 1
    # Two formatter nodes per good run; the bad run's extract_text node failed (its file was deleted).
    assert value(samples, "flowline_step_duration_seconds_count", node_type="formatter", status="Succeeded") == 4
    assert value(samples, "flowline_step_duration_seconds_count", node_type="extract_text", status="Failed") == 1
    assert value(samples, "flowline_worker_threads", worker_id=worker_id) == 1
    assert value(samples, "flowline_worker_heartbeat_timestamp_seconds", worker_id=worker_id) > 0
    # One run thread, WEBHOOK_CONCURRENCY's two delivery threads, the maintenance and the schedule threads.
    assert value(samples, "flowline_db_pool_max_connections", pool="flowline-worker") == 5
    # A worker's endpoint shows its own work only: no request series, no database-derived gauges.
    assert not {n for n in names(samples) if n.startswith(("flowline_http_", "flowline_queue_", "flowline_database"))}

    # The API reports the worker's heartbeat from the workers table, whether or not anyone scrapes the worker.
    def heard_of():
        samples = scrape(client)
        return value(samples, "flowline_workers_alive") == 1 and samples

    api = wait_for(heard_of, message="the worker's heartbeat in the API's metrics")
    assert value(api, "flowline_worker_last_heartbeat_timestamp_seconds", worker_id=worker_id) > 0

    def beat_since_start():
        return sql.execute(
            "SELECT heartbeat_at > started_at AS beat FROM workers WHERE id = %s", (worker_id,)
        ).fetchone()["beat"]

    wait_for(beat_since_start, message="a heartbeat after the worker's start")

    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    api = scrape(client)
    assert value(api, "flowline_workers_alive") == 0
    assert value(api, "flowline_worker_last_heartbeat_timestamp_seconds", worker_id=worker_id) is None
    assert sql.execute("SELECT stopped_at FROM workers WHERE id = %s", (worker_id,)).fetchone()["stopped_at"]


def test_sync_runs_and_cancelled_pending_runs_are_counted_by_the_api(client, workflow):
    before = scrape(client)
    workflow_id = workflow([UPPER])
    assert client.post(f"/workflows/{workflow_id}/run", json={"input_text": "x"}).status_code == 200
    assert client.post(f"/runs/{queue(client, workflow_id)}/cancel").status_code == 200
    after = scrape(client)

    def delta(name, **labels):
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    assert delta("flowline_runs_finished_total", mode="sync", status="Succeeded") == 1
    assert delta("flowline_run_duration_seconds_count", mode="sync", status="Succeeded") == 1
    assert delta("flowline_step_duration_seconds_count", node_type="formatter", status="Succeeded") == 1
    assert delta("flowline_runs_finished_total", mode="async", status="Cancelled") == 1


# --- the database down ----------------------------------------------------------------------------------------------


def test_metrics_answer_while_the_database_is_down(make_server):
    server = make_server(DOWN_URL)
    # A request that waited for a pooled connection would hang for this long; a scrape must not.
    server.env["DB_POOL_TIMEOUT_S"] = "60"
    server.start(ready=("/livez", 200))
    for _ in range(3):
        status, text, _ = http_get(server.base + "/metrics", timeout=15)
        assert status == 200
        samples = parse(text)
        assert value(samples, "flowline_database_up") == 0
        assert not {n for n in names(samples) if n.startswith(("flowline_queue_", "flowline_workers_"))}
        assert value(samples, "flowline_runs", status="Pending") is None
    # The requests themselves are still counted.
    assert value(samples, "flowline_http_requests_total", method="GET", route="/metrics", status="200") >= 2
    server.stop()


def test_openmetrics_when_the_scraper_asks_for_it(client):
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.status_code == 200
    assert response.mimetype == "application/openmetrics-text"
    assert response.get_data(as_text=True).endswith("# EOF\n")
    assert response.headers["X-Request-ID"]
