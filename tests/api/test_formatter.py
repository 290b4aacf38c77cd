"""Formatter nodes through the API (the rules themselves: tests/unit/test_formatter.py)."""

import pytest


@pytest.mark.parametrize(
    "config, text, expected",
    [
        ({}, "hello ﾃｽﾄ", "HELLO ﾃｽﾄ"),  # the milestone-1 default: uppercase only
        ({"rules": []}, "hello", "hello"),
        ({"rules": ["normalize_width", "strip"]}, "  ＨＥＬＬＯ　ﾜｰﾙﾄﾞ  ", "HELLO ワールド"),
    ],
)
def test_formatter_nodes_run_through_the_api(client, workflow, config, text, expected):
    workflow_id = workflow([("formatter", config)])
    response = client.post(f"/workflows/{workflow_id}/run", json={"input_text": text})
    assert response.status_code == 200, response.json
    assert response.json["final_output"] == expected
