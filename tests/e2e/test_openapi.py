"""Schemathesis finding that a real gunicorn keeps the OpenAPI document's contract (the document itself:
tests/api/test_openapi.py)."""

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support import make_pdf


def _seed(base):
    """Create a workflow with one node of each type, a run and a file; return their ids by path parameter name."""
    with httpx.Client(base_url=base, timeout=30) as http:
        file_id = http.post("/files", files={"file": ("doc.pdf", make_pdf("seeded"), "application/pdf")}).json()[
            "file_id"
        ]
        workflow_id = http.post("/workflows", json={"name": "seeded"}).json()["id"]
        node_ids = []
        for node_type, config in (
            ("extract_text", {"file_id": file_id}),
            ("generative_ai", {"prompt": "p {text}", "model": "m"}),
            ("formatter", {"rules": ["lowercase"]}),
        ):
            added = http.post(f"/workflows/{workflow_id}/nodes", json={"node_type": node_type, "config": config})
            assert added.status_code == 200, added.text
            node_ids.append(added.json()["node_id"])
        run = http.post(f"/workflows/{workflow_id}/run", json={"input_text": "seed"})
        assert run.status_code == 200, run.text
    return {"workflow_id": [workflow_id], "node_id": node_ids, "run_id": [run.json()["run_id"]], "file_id": [file_id]}


@pytest.fixture
def api_schema(server):
    schema = schemathesis.openapi.from_url(server.base + "/openapi.json")
    seeded = _seed(server.base)

    # Half the cases use ids that exist (so routes go past their 404), half the generated ones.
    @schema.hook
    def flatmap_path_parameters(context, path_parameters):
        known = {name: st.sampled_from(seeded[name]) for name in path_parameters or {} if name in seeded}
        if not known:
            return st.just(path_parameters)
        fixed = {name: st.just(value) for name, value in path_parameters.items()}
        return st.one_of(st.just(path_parameters), st.fixed_dictionaries({**fixed, **known}))

    return schema


_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


# 15 examples per operation and mode: with the routes of the LLM budgets and usage, 25 made this module the suite's
# costliest by far (147 s of the suite's 6 minutes).
_SETTINGS = hypothesis.settings(
    max_examples=15, deadline=None, derandomize=True, database=None, suppress_health_check=list(hypothesis.HealthCheck)
)


# The operations are shared out over this many tests, each against a server and a database of its own, so pytest-xdist
# runs them side by side instead of one test walking every operation.
SHARDS = 4


@pytest.mark.parametrize("shard", range(SHARDS))
def test_api_keeps_its_contract(api_schema, shard):
    """Every operation (this shard's share), with positive and negative data: never a 5xx, and every answer as
    documented."""
    failures = []
    every = sorted((result.ok() for result in api_schema.get_all_operations()), key=lambda op: op.label)
    paths = api_schema.raw_schema["paths"]
    documented = {f"{method.upper()} {path}" for path, ops in paths.items() for method in ops}
    # schemathesis leaves out the operation serving the schema it was loaded from.
    assert {operation.label for operation in every} | {"GET /openapi.json"} == documented
    # Deletions last (workflows last of all), so the shard's other operations still find the seeded ids.
    operations = sorted(
        every[shard::SHARDS],
        key=lambda op: (
            op.method.upper() == "DELETE",
            op.path.startswith("/workflows/{workflow_id}") and op.path.count("/") == 2,
        ),
    )
    for operation in operations:
        definition = paths[operation.path][operation.method.lower()]
        has_inputs = bool(definition["parameters"]) or "requestBody" in definition
        # Negative data needs something to make invalid: an operation without parameters or body has none.
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if has_inputs else (GenerationMode.POSITIVE,):

            @_SETTINGS
            @hypothesis.given(case=operation.as_strategy(mode))
            def check(case):
                case.call_and_validate(checks=_CHECKS, timeout=30)

            try:
                check()
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis' failures, named by operation and mode
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)
