"""GET /runs (issue #13 item 4): the runs of every workflow, newest first, in keyset pages, filtered by status,
workflow or both, each filter served by its own index."""

import pytest

UNKNOWN_WORKFLOW = "0b7e4c1a-1b2c-4d3e-8f90-123456789abc"


def _all_pages(client, limit, **filters):
    runs, cursor, pages = [], None, 0
    while True:
        query = {"limit": limit, **filters, **({"cursor": cursor} if cursor else {})}
        response = client.get("/runs", query_string=query)
        assert response.status_code == 200, response.json
        assert len(response.json["runs"]) <= limit
        runs += response.json["runs"]
        pages += 1
        cursor = response.json["next_cursor"]
        if cursor is None:
            return runs, pages


def _insert_runs(sql, workflow_ids, count):
    """Insert ``count`` runs spread evenly over the workflows, and over the statuses as a history has them (5 %
    each Failed, Cancelled, Pending and Running, the rest Succeeded); every three in a row share their created_at,
    so pages also cut between ties."""
    sql.execute(
        "INSERT INTO runs (workflow_id, mode, status, input, attempt, max_attempts, created_at, "
        "                  finished_at, lease_token, lease_expires_at) "
        "SELECT workflow_id, 'async', status, '{}', 1, 3, created_at, "
        "       CASE WHEN status IN ('Succeeded', 'Failed', 'Cancelled') THEN created_at END, "
        "       CASE WHEN status = 'Running' THEN gen_random_uuid() END, "
        "       CASE WHEN status = 'Running' THEN now() + interval '1 hour' END "
        "FROM (SELECT (%(workflows)s::uuid[])[1 + g %% cardinality(%(workflows)s::uuid[])] AS workflow_id, "
        "             coalesce((ARRAY['Failed', 'Cancelled', 'Pending', 'Running'])[1 + g %% 20], 'Succeeded') AS status, "
        "             now() - make_interval(secs => g / 3) AS created_at "
        "      FROM generate_series(1, %(count)s) AS g) AS spread",
        {"workflows": workflow_ids, "count": count},
    )


def _expected_ids(sql, where="true", params=()):
    return [
        str(row["id"]) for row in sql.execute(f"SELECT id FROM runs WHERE {where} ORDER BY created_at DESC, id", params)
    ]


def test_runs_of_every_workflow_page_newest_first_without_duplicates_or_gaps(client, workflow, sql):
    first, second = workflow(), workflow()
    _insert_runs(sql, [first, second], 23)
    queued = client.post(f"/workflows/{first}/runs").json["run_id"]  # created now: the newest of all
    runs, pages = _all_pages(client, 4)
    assert [r["id"] for r in runs] == _expected_ids(sql) and runs[0]["id"] == queued
    assert pages == 6 and {r["workflow_id"] for r in runs} == {first, second}
    assert set(runs[0]) == set(client.get(f"/runs/{queued}").json["run"])  # the Run shape of GET /runs/{id}
    default = client.get("/runs").json
    assert len(default["runs"]) == 24 and default["next_cursor"] is None  # limit 50 by default


def test_runs_filter_by_status_workflow_or_both(client, workflow, sql):
    first, second = workflow(), workflow()
    _insert_runs(sql, [first, second], 60)
    succeeded, _ = _all_pages(client, 5, status="Succeeded")
    assert [r["id"] for r in succeeded] == _expected_ids(sql, "status = 'Succeeded'") and len(succeeded) == 48
    of_first, _ = _all_pages(client, 7, workflow_id=first)
    assert [r["id"] for r in of_first] == _expected_ids(sql, "workflow_id = %s", (first,)) and len(of_first) == 30
    both, _ = _all_pages(client, 2, workflow_id=second, status="Cancelled")
    assert [r["id"] for r in both] == _expected_ids(sql, "workflow_id = %s AND status = 'Cancelled'", (second,))
    assert len(both) == 3 and {(r["workflow_id"], r["status"]) for r in both} == {(second, "Cancelled")}
    pending_of_first = client.get("/runs", query_string={"workflow_id": first, "status": "Pending", "limit": 200})
    assert pending_of_first.json["runs"] == [r for r in of_first if r["status"] == "Pending"] != []
    # A filter that matches nothing is an empty page, as for any filter: the workflow is not the resource asked for.
    for query in ({"workflow_id": UNKNOWN_WORKFLOW}, {"workflow_id": UNKNOWN_WORKFLOW, "status": "Failed"}):
        response = client.get("/runs", query_string=query)
        assert response.status_code == 200 and response.json == {"runs": [], "next_cursor": None}


@pytest.mark.parametrize(
    "query, field",
    [
        ({"status": "Done"}, "status"),
        ({"workflow_id": "not-a-uuid"}, "workflow_id"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"colour": "red"}, "colour"),
        ({"workflow": UNKNOWN_WORKFLOW}, "workflow"),
    ],
)
def test_bad_runs_query_parameters_are_422(client, query, field):
    response = client.get("/runs", query_string=query)
    assert response.status_code == 422 and field in response.json["errors"]


def test_a_runs_cursor_not_made_here_is_422(client):
    response = client.get("/runs", query_string={"cursor": "nonsense"})
    assert response.status_code == 422 and "cursor is not valid" in response.json["detail"]


@pytest.mark.parametrize(
    "query_name, index, filters",
    [
        ("list_runs_page", "runs_created_idx", {}),
        ("list_runs_by_status_page", "runs_status_created_idx", {"status": "Failed"}),
        ("list_workflow_runs_page", "runs_workflow_created_idx", {"workflow": True, "status": None}),
        (
            "list_workflow_runs_by_status_page",
            "runs_workflow_status_created_idx",
            {"workflow": True, "status": "Failed"},
        ),
    ],
)
def test_each_runs_list_shape_reads_a_page_from_its_index(sql, query_name, index, filters):
    """At 20,000 runs over 39 workflows and the five statuses, a middle page of every filter combination starts
    in its index at the cursor and reads about a page of rows: no Seq Scan, no filtering of other rows.

    The data decide the plan, so the workflows here are mid-sized on purpose: with 1 of 17 workflows the planner
    reads a workflow's page from runs_created_idx, filtering the others' rows out (it reckons those sequential
    heap reads cheaper); with 1 of 101 (about 200 runs each) it reads all the rows after the cursor in a bitmap
    scan and sorts them.
    """
    from flowline.data.sql import QUERIES

    workflow_ids = [
        str(row["id"])
        for row in sql.execute(
            "INSERT INTO workflows (name) SELECT 'bulk ' || g FROM generate_series(1, 39) AS g RETURNING id"
        )
    ]
    _insert_runs(sql, workflow_ids, 20000)
    sql.execute("ANALYZE runs")
    params = {key: value for key, value in filters.items() if key != "workflow"}
    if filters.get("workflow"):
        params["workflow_id"] = workflow_ids[1]
    where = " AND ".join(
        [f"{column} = %({column})s" for column in ("workflow_id", "status") if params.get(column)] or ["true"]
    )
    matching = sql.execute(f"SELECT count(*) AS n FROM runs WHERE {where}", params).fetchone()["n"]
    cursor_row = sql.execute(
        f"SELECT created_at, id FROM runs WHERE {where} ORDER BY created_at DESC, id OFFSET %(skip)s LIMIT 1",
        {**params, "skip": matching // 2},
    ).fetchone()
    params |= {"after_created_at": cursor_row["created_at"], "after_id": cursor_row["id"], "row_limit": 51}
    plan = sql.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + QUERIES[query_name].text, params).fetchone()["QUERY PLAN"][0]
    text = str(plan)
    assert index in text and "Seq Scan" not in text
    scans = [node for node in _plan_nodes(plan["Plan"]) if node.get("Index Name") == index]
    assert scans and scans[0]["Actual Rows"] <= 51 + 5
    assert scans[0].get("Rows Removed by Filter", 0) <= 5, "the index should hold exactly the rows asked for"


def _plan_nodes(node):
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)
