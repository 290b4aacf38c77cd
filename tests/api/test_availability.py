"""When the database is unreachable: 503 with Retry-After within the pool timeout, never a 500 or a hang."""

import time

import pytest

from app import create_app

# A unix socket folder with no server in it: connecting fails at once, as when PostgreSQL is down.
DOWN_URL = "postgresql://postgres@/flowline?host=/nonexistent-flowline-socket&connect_timeout=1"


@pytest.fixture
def down_client():
    app = create_app({"TESTING": True, "DATABASE_URL": DOWN_URL, "DB_POOL_TIMEOUT_S": 0.5})
    yield app.test_client()
    app.extensions["flowline.pool"].close()


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("post", "/workflows", {"name": "w"}),
        ("get", "/workflows/9b0c4f4e-3c55-4c1e-9f53-0b5a0b0f3a11", None),
        ("post", "/workflows/9b0c4f4e-3c55-4c1e-9f53-0b5a0b0f3a11/nodes", {"node_type": "formatter", "config": {}}),
        ("post", "/workflows/9b0c4f4e-3c55-4c1e-9f53-0b5a0b0f3a11/run", None),
        ("get", "/workflows/9b0c4f4e-3c55-4c1e-9f53-0b5a0b0f3a11/runs", None),
        ("get", "/runs/9b0c4f4e-3c55-4c1e-9f53-0b5a0b0f3a11", None),
    ],
)
def test_requests_answer_503_with_retry_after_when_the_database_is_down(down_client, method, path, body):
    started = time.monotonic()
    response = getattr(down_client, method)(path, json=body)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json == {"detail": "The database is unavailable or busy; retry shortly."}
    assert time.monotonic() - started < 5, "a request must not hang while the database is down"


def test_liveness_stays_up_and_readiness_names_the_database(down_client):
    assert down_client.get("/livez").status_code == 200
    ready = down_client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json["checks"] == {"database": "unreachable"}
    assert ready.headers["Retry-After"] == "1"


def test_bad_input_is_still_4xx_while_the_database_is_down(down_client):
    assert down_client.get("/runs/not-a-uuid").status_code == 404
    assert down_client.post("/workflows", json={"name": ""}).status_code == 422
