"""The acceptance scenarios against the real server: gunicorn started with the documented command, stopped, and
started again between the writes and the reads."""

import psycopg


def test_acceptance_scenarios_survive_a_restart(server, database_url):
    # 1. A created workflow gets an id and is persisted.
    status, created, headers = server.request("POST", "/workflows", {"name": "Invoice pipeline"})
    assert status == 200 and created["name"] == "Invoice pipeline" and headers["X-Request-ID"]
    workflow_id = created["id"]

    # 3. Added nodes (with JSON configs) are persisted and read back in order.
    configs = [
        ("extract_text", {}),
        ("formatter", {"rules": ["normalize_width", "strip"]}),
        ("generative_ai", {"prompt": "Summarise: {text}", "model": "gpt-4o-mini"}),
        ("formatter", {}),
    ]
    node_ids = []
    for node_type, config in configs:
        status, added, _ = server.request(
            "POST", f"/workflows/{workflow_id}/nodes", {"node_type": node_type, "config": config}
        )
        assert status == 200 and added["message"] == "Node added"
        node_ids.append(added["node_id"])

    # 2. Fetching it returns its name and all its nodes with their saved configuration.
    status, before, _ = server.request("GET", f"/workflows/{workflow_id}")
    assert status == 200 and before["name"] == "Invoice pipeline"
    assert [(n["id"], n["node_type"], n["config"]) for n in before["nodes"]] == [
        (node_id, node_type, config) for node_id, (node_type, config) in zip(node_ids, configs, strict=True)
    ]

    # 4. A run creates a persisted run record and one persisted step per node.
    status, ran, _ = server.request("POST", f"/workflows/{workflow_id}/run", {"input_text": "  ＡＢＣ　ﾃｽﾄ  "})
    assert status == 200 and ran["final_output"] == "SUMMARISE: ABC テスト"
    status, failed, _ = server.request("POST", f"/workflows/{_workflow_that_fails(server, database_url)}/run")
    assert status == 422 and failed["run_id"]
    status, runs_before, _ = server.request("GET", f"/workflows/{workflow_id}/runs")
    status, run_before, _ = server.request("GET", f"/runs/{ran['run_id']}")
    assert run_before["run"]["status"] == "Succeeded" and len(run_before["steps"]) == 4

    # 5. After a restart, everything is still served by the same endpoints.
    server.stop()
    server.start()
    assert server.request("GET", f"/workflows/{workflow_id}")[1] == before
    assert server.request("GET", f"/workflows/{workflow_id}/runs")[1] == runs_before
    assert server.request("GET", f"/runs/{ran['run_id']}")[1] == run_before
    status, failed_run, _ = server.request("GET", f"/runs/{failed['run_id']}")
    assert failed_run["run"]["status"] == "Failed" and failed_run["run"]["error_message"]

    # Edge cases, on the real server: no internal details leak.
    status, missing, _ = server.request("GET", "/workflows/not-a-uuid")
    assert (status, missing) == (404, {"detail": "Workflow not found"})
    status, invalid, _ = server.request(
        "POST", f"/workflows/{workflow_id}/nodes", {"node_type": "formatter", "config": {"rules": ["shout"]}}
    )
    assert status == 422 and "rules" in invalid["errors"]["config"]


def _workflow_that_fails(server, database_url):
    """Create a workflow whose only node's stored config is no longer valid (as if written by an older release),
    so its runs fail."""
    workflow_id = server.request("POST", "/workflows", {"name": "fails"})[1]["id"]
    server.request("POST", f"/workflows/{workflow_id}/nodes", {"node_type": "formatter", "config": {}})
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute('UPDATE nodes SET config = \'{"rules": ["shout"]}\' WHERE workflow_id = %s', (workflow_id,))
    return workflow_id


def test_the_server_boots_while_the_database_is_down_and_answers_503(make_server):
    server = make_server("postgresql://postgres@/flowline?host=/nonexistent-flowline-socket")
    server.env["DB_POOL_TIMEOUT_S"] = "0.5"
    server.start(ready=("/livez", 200))
    try:
        status, _body, headers = server.request("POST", "/workflows", {"name": "w"})
        assert (status, headers["Retry-After"]) == (503, "1")
        assert server.request("GET", "/readyz")[1]["checks"] == {"database": "unreachable"}
    finally:
        server.stop()
    assert "unreachable at start-up" in server.log.read_text()


def test_the_server_says_loudly_when_migrations_are_pending(make_database, make_server):
    server = make_server(make_database())
    server.start(ready=("/readyz", 503))
    try:
        _status, body, _ = server.request("GET", "/readyz")
        assert "migration(s) pending" in body["detail"]
    finally:
        server.stop()
    assert "SCHEMA IS BEHIND" in server.log.read_text()
