"""One URL per resource: an id in a URL is accepted only as Flowline sends it (lowercase, hyphenated); the same
UUID spelt any other way is a 404 like any unknown id, on every route that takes an id."""

import uuid

import pytest

from tests.support import make_pdf

ALIASES = {
    "hyphenless": lambda id_: uuid.UUID(id_).hex,
    "urn": lambda id_: uuid.UUID(id_).urn,
    "braces": lambda id_: "{" + id_ + "}",
    "uppercase": lambda id_: id_.upper(),
}

# (method, path template, JSON body, the answer's status for the canonical id, the id the 404 is about)
ROUTES = [
    ("get", "/workflows/{workflow}", None, 200, "workflow"),
    ("patch", "/workflows/{workflow}", {"name": "renamed"}, 200, "workflow"),
    ("post", "/workflows/{workflow}/nodes", {"node_type": "formatter", "config": {}}, 200, "workflow"),
    ("get", "/workflows/{workflow}/nodes/{node}", None, 200, "workflow"),
    ("get", "/workflows/{workflow}/nodes/{node}", None, 200, "node"),
    ("patch", "/workflows/{workflow}/nodes/{node}", {"config": {"rules": ["lowercase"]}}, 200, "node"),
    ("put", "/workflows/{workflow}/nodes/order", "node_order", 200, "workflow"),
    ("post", "/workflows/{workflow}/run", {"input_text": "x"}, 200, "workflow"),
    ("post", "/workflows/{workflow}/runs", {"input_text": "x"}, 202, "workflow"),
    ("get", "/workflows/{workflow}/runs", None, 200, "workflow"),
    ("get", "/runs/{run}", None, 200, "run"),
    ("get", "/runs/{run}/events", None, 200, "run"),
    ("get", "/files/{file}", None, 200, "file"),
    ("post", "/workflows/{workflow}/webhooks", {"url": "https://h.example/"}, 201, "workflow"),
    ("get", "/workflows/{workflow}/webhooks", None, 200, "workflow"),
    ("get", "/webhooks/{webhook}", None, 200, "webhook"),
    ("patch", "/webhooks/{webhook}", {"events": ["run.failed"]}, 200, "webhook"),
    ("post", "/webhooks/{webhook}/rotate-secret", None, 200, "webhook"),
    ("get", "/webhooks/{webhook}/deliveries", None, 200, "webhook"),
    ("post", "/deliveries/{delivery}/retry", None, 202, "delivery"),
    ("delete", "/workflows/{workflow}/nodes/{node}", None, 204, "node"),
    ("delete", "/files/{file}", None, 204, "file"),
    ("delete", "/webhooks/{webhook}", None, 204, "webhook"),
    ("delete", "/workflows/{workflow}", None, 204, "workflow"),
]


@pytest.fixture
def ids(client, workflow, upload):
    file_id = upload(make_pdf("one url")).json["file_id"]
    workflow_id = workflow([("formatter", {})])
    node_id = client.get(f"/workflows/{workflow_id}").json["nodes"][0]["id"]
    webhook_id = client.post(f"/workflows/{workflow_id}/webhooks", json={"url": "https://h.example/"}).json["id"]
    run_id = client.post(f"/workflows/{workflow_id}/run", json={"input_text": "x"}).json["run_id"]
    [delivery] = client.get(f"/webhooks/{webhook_id}/deliveries").json["deliveries"]
    return {
        "workflow": workflow_id,
        "node": node_id,
        "run": run_id,
        "file": file_id,
        "webhook": webhook_id,
        "delivery": delivery["id"],
    }


def call(client, ids, method, template, body, **spelt):
    path = template.format(**{**ids, **spelt})
    if body == "node_order":
        body = {"node_ids": [ids["node"]]}
    return getattr(client, method)(path, json=body)


# One test per route tries every alias (each must change nothing) before the canonical id: a database, app and
# upload per route rather than per alias.
@pytest.mark.parametrize(
    "method, template, body, status, which", ROUTES, ids=[f"{m.upper()} {t} ({w})" for m, t, _, _, w in ROUTES]
)
def test_an_id_spelt_otherwise_is_not_found_and_the_canonical_one_is(
    client, ids, sql, method, template, body, status, which
):
    def counts():
        return sql.execute(
            "SELECT (SELECT count(*) FROM workflows) w, (SELECT count(*) FROM nodes) n, "
            "(SELECT count(*) FROM runs) r, (SELECT count(*) FROM files) f"
        ).fetchone()

    before = counts()
    for name, alias in ALIASES.items():
        response = call(client, ids, method, template, body, **{which: alias(ids[which])})
        assert response.status_code == 404, (name, response.json)
        assert response.json == {"detail": f"{which.capitalize()} not found"}, name
        assert counts() == before, f"a refused alias ({name}) changed nothing"

    assert call(client, ids, method, template, body).status_code == status


def test_ids_in_bodies_keep_accepting_any_spelling_of_a_uuid(client, ids):
    node = client.post(
        f"/workflows/{ids['workflow']}/nodes",
        json={"node_type": "extract_text", "config": {"file_id": ids["file"].upper()}},
    )
    assert node.status_code == 200, node.json
    reordered = client.put(
        f"/workflows/{ids['workflow']}/nodes/order",
        json={"node_ids": [uuid.UUID(node.json["node_id"]).hex, ids["node"].upper()]},
    )
    assert reordered.status_code == 200, reordered.json
