"""History reads on a real streaming replica: a private primary and a hot standby made from it with
``pg_basebackup -R`` (tests/support/clusters.py), for this module.

The reads land on the replica: with its replay paused, a run written since is missing from `GET /runs`, `GET
/usage` and the console's runs list (served there) while `GET /runs/{id}` and the workflow's runs (read after write: the primary)
show it; over REPLICA_MAX_LAG_S the same lists come from the primary. Then the replica stops, and every read still
answers, at once, from the primary; /readyz stays ready, saying so.
"""

import time

import psycopg
import pytest

from app import create_app
from flowline.data import migrations
from tests.support import cluster_url, streaming_replica, throwaway_cluster, url_for_database, wait_for
from tests.support.contract import ContractClient

SECRET = "s" * 40


@pytest.fixture(scope="module")
def primary():
    with throwaway_cluster("flowline-primary-") as (home, _):
        with psycopg.connect(cluster_url(home), autocommit=True) as conn:
            conn.execute("CREATE DATABASE flowline")
        url = url_for_database(cluster_url(home), "flowline")
        migrations.apply(url)
        yield home, url


@pytest.fixture(scope="module")
def standby(primary):
    home, _ = primary
    with streaming_replica(home) as (replica_home, pg_ctl):
        yield url_for_database(cluster_url(replica_home), "flowline"), pg_ctl


@pytest.fixture
def make(primary, standby):
    """Return a factory of test clients of apps reading history from the replica (``max_lag_s``)."""
    apps = []

    def client(max_lag_s):
        app = create_app(
            {
                "TESTING": True,
                "DATABASE_URL": primary[1],
                "DATABASE_REPLICA_URL": standby[0],
                "REPLICA_MAX_LAG_S": max_lag_s,
                "SECRET_KEY": SECRET,
            }
        )
        app.test_client_class = ContractClient
        apps.append(app)
        return app.test_client()

    yield client
    for app in apps:
        app.extensions["flowline.waits"].close()
        app.extensions["flowline.pool"].close()
        app.extensions["flowline.replica"].close()


def run(client, workflow_id, text):
    answer = client.post(f"/workflows/{workflow_id}/run", json={"input_text": text})
    assert answer.status_code == 200, answer.json
    return answer.json["run_id"]


def listed(client):
    return {run["id"] for run in client.get("/runs").json["runs"]}


def usage_runs(client):
    return sum(row["runs"] for row in client.get("/usage?group_by=workflow").json["usage"])


def test_history_reads_land_on_the_replica_until_it_lags(make, standby):
    client = make(max_lag_s=3600)
    workflow_id = client.post("/workflows", json={"name": "replicated"}).json["id"]
    client.post(f"/workflows/{workflow_id}/nodes", json={"node_type": "formatter", "config": {}})
    # An LLM step (the echo provider's) makes each run count in /usage.
    client.post(f"/workflows/{workflow_id}/nodes", json={"node_type": "generative_ai", "config": {"prompt": "{text}"}})
    first = run(client, workflow_id, "first")
    wait_for(lambda: first in listed(client), message="the replica to replay the first run")
    with psycopg.connect(standby[0], autocommit=True) as replica:
        replica.execute("SELECT pg_wal_replay_pause()")
        try:
            second = run(client, workflow_id, "second")
            # Read after write: the primary.
            assert client.get(f"/runs/{second}").json["run"]["status"] == "Succeeded"
            assert second in {r["id"] for r in client.get(f"/workflows/{workflow_id}/runs").json["runs"]}
            # History across workflows: the paused replica, which has not replayed the second run.
            assert listed(client) == {first}
            assert usage_runs(client) == 1
            console = client.get("/console/runs").get_data(as_text=True)
            assert first in console and second not in console
            assert client.get("/console/queue").status_code == 200
            assert client.get("/readyz").json["replica"] == "ok"
            # A replica behind REPLICA_MAX_LAG_S: the same reads come from the primary at once.
            strict = make(max_lag_s=0.5)
            time.sleep(0.6)
            assert listed(strict) == {first, second}
            assert usage_runs(strict) == 2
            assert second in strict.get("/console/runs").get_data(as_text=True)
            assert strict.get("/readyz").json["replica"] == "lagging"
            lag = [
                line
                for line in strict.get("/metrics").get_data(as_text=True).splitlines()
                if line.startswith("flowline_replica_lag_seconds ")
            ]
            assert lag and float(lag[0].split()[1]) > 0.5, lag
        finally:
            replica.execute("SELECT pg_wal_replay_resume()")
    wait_for(lambda: listed(client) == {first, second}, message="the replica to catch up")


def test_with_the_replica_down_every_read_answers_from_the_primary(make, standby):
    client = make(max_lag_s=3600)
    workflow_id = client.post("/workflows", json={"name": "replica down"}).json["id"]
    done = run(client, workflow_id, "while it runs")
    wait_for(lambda: done in listed(client), message="the replica to replay the run")
    standby[1]("-m", "immediate", "stop")
    try:
        latest = run(client, workflow_id, "after it stopped")
        started = time.monotonic()
        assert {done, latest} <= listed(client)
        assert time.monotonic() - started < 3, "a down replica costs at most one short connect timeout"
        for path in ("/console/runs", "/console/queue", "/console/usage", "/usage", "/runs?status=Succeeded"):
            assert client.get(path).status_code == 200, path
        started = time.monotonic()
        assert latest in listed(client)
        assert time.monotonic() - started < 0.5, "then it is not tried again for a few seconds"
        ready = client.get("/readyz")
        assert (ready.status_code, ready.json["status"], ready.json["replica"]) == (200, "ready", "unreachable")
        assert "flowline_replica_up 0.0" in client.get("/metrics").get_data(as_text=True)
    finally:
        standby[1]("start")
