"""The README's curl walk-through works verbatim against a live server (its tables: tests/unit/test_readme.py)."""

import json
import re
import subprocess

from tests.support import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _examples_block():
    after_marker = README.split("<!-- api-examples", 1)[1]
    return re.search(r"```sh\n(.*?)```", after_marker, re.S).group(1)


def test_the_api_walk_through_runs_verbatim_against_a_live_server(server):
    """Against gunicorn alone: the queued run stays Pending, as no worker runs here."""
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", _examples_block()],
        capture_output=True,
        text=True,
        env={"BASE": server.base, "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    (
        added_1,
        added_2,
        added_3,
        workflow,
        runs,
        run,
        queued,
        queued_run,
        cancelled,
        queued_events,
        missing,
        invalid,
        ready,
        renamed,
        too_late,
        workflows_page,
        runs_page,
        events,
        node,
        patched,
        reordered,
        deleted,
        front_1,
        front_2,
        front_3,
        front_strict,
        front_run,
    ) = _json_documents(result.stdout)
    assert added_1["message"] == added_2["message"] == added_3["message"] == "Node added"
    assert [n["node_type"] for n in workflow["nodes"]] == ["formatter", "generative_ai", "formatter"]
    assert runs["runs"][0]["final_output"] == run["run"]["final_output"] == "SUMMARISE: INVOICE テスト"
    assert len(run["steps"]) == 3
    # The repeated request (same Idempotency-Key) answered the run the first one queued.
    assert queued == {"run_id": queued_run["run"]["id"], "status": "Pending"}
    assert queued_run["run"]["mode"] == "async" and queued_run["run"]["status"] == "Pending"
    assert cancelled == {"run_id": queued["run_id"], "status": "Cancelled"}
    assert [(e["status"], e["note"]) for e in queued_events["events"]] == [
        ("Pending", "queued"),
        ("Cancelled", "cancelled by a client before it started"),
    ]
    assert missing == {"detail": "Workflow not found"}
    assert "rules" in invalid["errors"]["config"]
    assert ready["status"] == "ready"
    assert renamed["name"] == "Renamed" and "If-Match does not match" in too_late["detail"]
    assert len(workflows_page["workflows"]) == 1 and workflows_page["next_cursor"] is None
    assert [r["id"] for r in runs_page["runs"]] == [run["run"]["id"]]
    assert [e["status"] for e in events["events"]] == ["Running", "Succeeded"]
    assert node["config"] == {"rules": ["normalize_width", "strip"]} and patched["config"] == {"rules": ["strip"]}
    assert [n["id"] for n in reordered["nodes"]][-1] == node["id"] and deleted == {"deleted": 204}
    assert front_1["warnings"] == ["config.prompt is not used by extract_text nodes: kept, ignored"]
    assert "warnings" not in front_2
    assert front_3["warnings"] == ["config.prompt is not used by formatter nodes: kept, ignored"]
    assert front_strict["errors"] == {"config": {"prompt": ["Unknown field."]}}
    assert front_run["final_output"] == "SUMMARISE: INVOICE 42"


def _json_documents(text):
    """Return the JSON documents curl printed back to back (curl adds no newline between them)."""
    decoder, documents, at = json.JSONDecoder(), [], 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        document, at = decoder.raw_decode(text, at)
        documents.append(document)
    return documents
