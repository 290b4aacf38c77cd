"""The canonical JSON of a workflow and its md5: what import compares, file against database, to verify."""

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID


def _canonical_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical_value(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        # PostgreSQL's jsonb keeps 1e2 as 100: a number is compared by value, not by how it was spelled.
        return int(value)
    return value


def canonical_workflow(workflow: Mapping[str, Any], *, with_runs: bool) -> str:
    """Return the canonical JSON text of a loaded workflow: keys sorted, timestamps in UTC, nodes by position,
    runs by id, steps by (attempt, position), events by (at, id); without runs unless ``with_runs``."""
    workflow = dict(workflow, nodes=sorted(workflow["nodes"], key=lambda n: n["position"]))
    if with_runs:
        workflow["runs"] = [
            dict(
                run,
                steps=sorted(run["steps"], key=lambda s: (s["attempt"], s["position"])),
                events=sorted(run["events"], key=lambda e: (e["at"], str(e["id"]))),
            )
            for run in sorted(workflow["runs"], key=lambda r: str(r["id"]))
        ]
    else:
        workflow.pop("runs", None)
    return json.dumps(_canonical_value(workflow), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def workflow_checksum(workflow: Mapping[str, Any], *, with_runs: bool) -> str:
    """Return the md5 (hex) of :func:`canonical_workflow`: equal for a workflow in the file and read back."""
    return hashlib.md5(canonical_workflow(workflow, with_runs=with_runs).encode("utf-8")).hexdigest()
