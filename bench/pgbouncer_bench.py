"""What relying on no session state costs per request: the same app (Flask's test client, one thread, no HTTP) on
the same database three ways:

- direct: DATABASE_URL is the server, with startup options (statement_timeout, UTC) and prepared statements;
- per-transaction settings, direct: the server too, but session-free (DATABASE_DIRECT_URL spelled differently):
  no prepared statements, statement_timeout and UTC pipelined with each transaction's first statement; the
  difference from the first is the cost of the settings alone;
- through PgBouncer: DATABASE_URL is a real PgBouncer in transaction mode (tests/support/pgbouncer.py), which adds
  its own hop.

Each: GET /workflows/{id} (one statement) and GET /runs (one statement over the run list), ROUNDS rounds of
REQUESTS requests, alternating the three, median of the rounds' mean per request. `python -m bench.pgbouncer_bench`.
"""

import statistics
import time

from app import create_app
from bench.support import Database, say, server_url
from tests.support.pgbouncer import running_pgbouncer

REQUESTS = 500
ROUNDS = 5
ROUTES = ("/workflows/{id}", "/runs")


def _client(database_url, direct_url=""):
    app = create_app({"DATABASE_URL": database_url, "DATABASE_DIRECT_URL": direct_url, "DB_POOL_MIN_SIZE": 1})
    return app, app.test_client()


def _mean_us(client, path):
    started = time.perf_counter()
    for _ in range(REQUESTS):
        response = client.get(path)
        assert response.status_code == 200, response.get_data(as_text=True)
    return (time.perf_counter() - started) / REQUESTS * 1e6


def main():
    url = server_url()
    with Database(url) as database, running_pgbouncer(url, pool_size=10) as through:
        setup_app, setup = _client(database.url)
        workflow_id = setup.post("/workflows", json={"name": "bench"}).json["id"]
        setup.post(f"/workflows/{workflow_id}/nodes", json={"node_type": "formatter", "config": {}})
        for i in range(50):
            setup.post(f"/workflows/{workflow_id}/run", json={"input_text": f"run {i}"})
        setup_app.extensions["flowline.pool"].close()
        ways = {
            "direct (session options, prepared)": _client(database.url),
            "direct, per-transaction settings": _client(database.url, database.url + "&application_name=flowline"),
            "through PgBouncer (transaction mode)": _client(through(database.url), database.url),
        }
        results = {name: {route: [] for route in ROUTES} for name in ways}
        for n in range(ROUNDS):
            say(f"round {n + 1}/{ROUNDS}")
            for name, (_, client) in ways.items():
                for route in ROUTES:
                    path = route.format(id=workflow_id)
                    if n == 0:
                        _mean_us(client, path)  # warm-up: the first round also fills the caches
                    results[name][route].append(_mean_us(client, path))
        for app, _ in ways.values():
            app.extensions["flowline.pool"].close()
    base = {route: statistics.median(results[next(iter(ways))][route]) for route in ROUTES}
    print(f"µs per request (median of {ROUNDS} rounds of {REQUESTS}; Flask test client, one thread)")
    print(f"{'':40} " + " ".join(f"{route:>22}" for route in ROUTES))
    for name in ways:
        cells = []
        for route in ROUTES:
            median = statistics.median(results[name][route])
            cells.append(f"{median:8.0f} ({median - base[route]:+6.0f})")
        print(f"{name:40} " + " ".join(f"{cell:>22}" for cell in cells))


if __name__ == "__main__":
    main()
