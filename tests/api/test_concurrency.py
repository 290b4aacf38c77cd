"""Concurrent writes keep the invariants: node positions stay unique and gap-free."""

import threading

import psycopg
import pytest
from psycopg.types.json import Jsonb


def test_twenty_parallel_node_adds_get_twenty_distinct_gap_free_positions(make_app, workflow):
    app = make_app(DB_POOL_MAX_SIZE=20, DB_POOL_MIN_SIZE=20)
    workflow_id = workflow()
    start = threading.Barrier(20)
    answers = [None] * 20

    def add(i):
        client = app.test_client()
        start.wait()
        answers[i] = client.post(
            f"/workflows/{workflow_id}/nodes", json={"node_type": "formatter", "config": {"rules": ["strip"]}}
        )

    threads = [threading.Thread(target=add, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert [a.status_code for a in answers] == [200] * 20, [a.json for a in answers if a.status_code != 200]
    assert sorted(a.json["position"] for a in answers) == list(range(20))
    nodes = app.test_client().get(f"/workflows/{workflow_id}").json["nodes"]
    assert [n["position"] for n in nodes] == list(range(20))
    assert {n["id"] for n in nodes} == {a.json["node_id"] for a in answers}


def test_the_database_itself_refuses_two_nodes_at_one_position(sql, workflow):
    workflow_id = workflow([("formatter", {})])
    with pytest.raises(psycopg.errors.UniqueViolation):
        sql.execute(
            "INSERT INTO nodes (workflow_id, position, node_type, config) VALUES (%s, 0, 'formatter', %s)",
            (workflow_id, Jsonb({})),
        )


def test_positions_can_be_swapped_in_one_transaction(sql, workflow):
    """The UNIQUE constraint is deferrable, so a reorder (issue #3) can swap positions without a temporary slot."""
    workflow_id = workflow([("formatter", {"rules": ["strip"]}), ("formatter", {"rules": ["lowercase"]})])
    with sql.transaction():
        sql.execute("SET CONSTRAINTS ALL DEFERRED")
        sql.execute("UPDATE nodes SET position = 1 WHERE workflow_id = %s AND position = 0", (workflow_id,))
        sql.execute(
            "UPDATE nodes SET position = 0 WHERE workflow_id = %s AND config = %s",
            (workflow_id, Jsonb({"rules": ["lowercase"]})),
        )
    rows = sql.execute("SELECT config FROM nodes WHERE workflow_id = %s ORDER BY position", (workflow_id,)).fetchall()
    assert [r["config"] for r in rows] == [{"rules": ["lowercase"]}, {"rules": ["strip"]}]
