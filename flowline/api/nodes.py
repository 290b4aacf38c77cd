"""Nodes: add, read, change, delete and reorder a workflow's nodes.

Every change locks the workflow row first (bumping its version), which serialises concurrent changes to one
workflow's nodes and keeps positions unique and gap-free (0..n-1).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from flask import Blueprint, Response, after_this_request, jsonify, request
from psycopg import Connection
from psycopg.types.json import Jsonb

from .. import nodes
from ..data import db
from . import contract, prefer, schemas
from .errors import NotFound, Unprocessable
from .http import (
    etag,
    expected_versions,
    load_json,
    parse_id,
    precondition_failed,
    query_json_response,
    require_file,
    row_json_response,
    workflow_write_refused,
)
from .schemas import NodeCreateSchema, NodeOrderSchema, NodePatchSchema, check_node_config

bp = Blueprint("nodes", __name__)

_create_schema = NodeCreateSchema()
_patch_schema = NodePatchSchema()
_order_schema = NodeOrderSchema()


def _check_file_exists(conn: Connection, node_type: str, config: dict[str, Any]) -> None:
    """A node may only name uploaded files that exist (the config keys its type declares as file references).

    :raise ValidationError: 422 keyed ``config.<key>`` for the first file that does not.
    """
    for key, file_id in nodes.BY_NAME[node_type].files(config):
        require_file(conn, file_id, "config", key)


def _vary_on_prefer(response: Response) -> Response:
    response.vary.add("Prefer")
    return response


def _strict_applied(response: Response) -> Response:
    response.headers[prefer.APPLIED_HEADER] = prefer.STRICT_APPLIED
    return response


def _checked_config(node_type: str, config: dict[str, Any]) -> list[str]:
    """Validate ``config`` for ``node_type``; return the warnings for the keys it does not know (kept, ignored).

    Keys the type knows are validated whatever the client prefers; the others are refused only for a client that
    sent ``Prefer: handling=strict`` (its 422 then carries ``Preference-Applied``). Every answer of a route that
    calls this varies on ``Prefer``.

    :raise ValidationError: 422 keyed by field under ``config``.
    """
    after_this_request(_vary_on_prefer)
    warnings = check_node_config(node_type, config)
    if warnings and prefer.handling_is_strict(request):
        after_this_request(_strict_applied)
        check_node_config(node_type, config, strict=True)
    return warnings


def _lock_workflow(conn: Connection, workflow_id: uuid.UUID, versions: list[int] | None = None) -> None:
    """Lock ``workflow_id`` and bump its version for a change to its nodes.

    :raise NotFound: unknown workflow.
    :raise PreconditionFailed: ``versions`` given and the workflow's version is not among them.
    """
    if db.one(conn, "lock_workflow_for_node_change", workflow_id=workflow_id, expected_versions=versions) is None:
        raise workflow_write_refused(conn, workflow_id)


@bp.post("/workflows/<workflow_id>/nodes")
@contract.operation(
    "Append a node; the config keys its node_type knows are validated, others kept",
    headers=(contract.IF_MATCH, contract.PREFER_HANDLING),
    body=contract.NODE_CREATE,
)
@contract.responds(
    200, schemas.NodeAddedSchema, "The node was added (`warnings` names config keys its type does not use)."
)
@contract.errors(400, 404, 412, 413, 415, 422, 503)
def add_node(workflow_id: str) -> Response:
    """Append a node at the workflow's next position; 200 ``{message: "Node added", node_id, position}``.

    :raise 404: unknown workflow.
    :raise 412: ``If-Match`` names a workflow version that is no longer current.
    Keys of ``config`` the node type does not know are stored as sent and named in ``warnings``; with
    ``Prefer: handling=strict`` they are a 422 instead.

    :raise 404: unknown workflow.
    :raise 412: ``If-Match`` names a workflow version that is no longer current.
    :raise 422: an unknown node type, a config that is not an object, a known config key with an invalid value,
        or (strict) an unknown config key; errors keyed by field.
    """
    workflow_uuid = parse_id(workflow_id, "Workflow")
    data = load_json(_create_schema)
    node, warnings = add(workflow_uuid, data["node_type"], data["config"], expected_versions())
    answer = {"message": "Node added", "node_id": node["id"], "position": node["position"]}
    if warnings:
        answer["warnings"] = warnings
    return jsonify(answer)


def add(
    workflow_id: uuid.UUID, node_type: str, config: dict[str, Any], versions: list[int] | None
) -> tuple[dict[str, Any], list[str]]:
    """Append a node of ``node_type`` with ``config`` to ``workflow_id`` if its version is among ``versions``
    (None: any); return ``(node row with id and position, warnings)``.

    :raise NotFound: unknown workflow.
    :raise PreconditionFailed: the workflow's version is not among ``versions``.
    :raise ValidationError: a config its type refuses, or a file it names that does not exist.
    """
    warnings = _checked_config(node_type, config)
    with db.transaction() as conn:
        # Locking the workflow row serialises concurrent adds, so each reads the position the previous one took.
        _lock_workflow(conn, workflow_id, versions)
        _check_file_exists(conn, node_type, config)
        node = db.one(conn, "add_node", workflow_id=workflow_id, node_type=node_type, config=Jsonb(config))
    assert node is not None  # an INSERT from an aggregate (max(position)): always one row
    return node, warnings


@bp.get("/workflows/<workflow_id>/nodes/<node_id>")
@contract.operation("Read one node")
@contract.responds(200, schemas.NodeSchema, "The node.", "ETag")
@contract.errors(404, 503)
def get_node(workflow_id: str, node_id: str) -> Response:
    """Return one node of a workflow, with its version as ``ETag``.

    :raise 404: unknown workflow or node.
    """
    return query_json_response(
        "get_node_json",
        "Node not found",
        workflow_id=parse_id(workflow_id, "Workflow"),
        node_id=parse_id(node_id, "Node"),
    )


@bp.patch("/workflows/<workflow_id>/nodes/<node_id>")
@contract.operation(
    "Change a node's config, its type, or both (the result must be valid for the type)",
    headers=(contract.IF_MATCH, contract.PREFER_HANDLING),
    body=schemas.NodePatchSchema,
)
@contract.responds(
    200,
    schemas.NodeChangedSchema,
    "The changed node (`warnings` names config keys its type does not use).",
    "ETag",
)
@contract.errors(400, 404, 412, 413, 415, 422, 503)
def change_node(workflow_id: str, node_id: str) -> Response:
    """Replace a node's ``config``, its ``node_type``, or both; 200 with the node and its new ``ETag``.

    The resulting config must be valid for the resulting type: changing only ``node_type`` keeps the config,
    which must then suit the new type; keys the type does not know are kept and named in ``warnings`` (a 422
    with ``Prefer: handling=strict``). With ``If-Match`` (the node's ETag), only if unchanged since.

    :raise 404: unknown workflow or node.
    :raise 412: ``If-Match`` names a node version that is no longer current (nothing changed).
    :raise 422: nothing to change, an unknown type, a known config key with an invalid value, or (strict) an
        unknown config key; errors keyed by field.
    """
    workflow_uuid, node_uuid = parse_id(workflow_id, "Workflow"), parse_id(node_id, "Node")
    data = load_json(_patch_schema)
    row, warnings = change(workflow_uuid, node_uuid, data.get("node_type"), data.get("config"), expected_versions())
    if not warnings:
        return row_json_response(row)
    response = jsonify({**json.loads(row["body"]), "warnings": warnings})
    response.headers["ETag"] = etag(row["version"])
    return response


def change(
    workflow_id: uuid.UUID,
    node_id: uuid.UUID,
    node_type: str | None,
    config: dict[str, Any] | None,
    versions: list[int] | None,
) -> tuple[dict[str, Any], list[str]]:
    """Set a node's ``node_type`` and/or ``config`` (None: keep it) if the node's version is among ``versions``
    (None: any); return ``(node row with body and version, warnings)``.

    :raise NotFound: unknown workflow or node.
    :raise PreconditionFailed: the node's version is not among ``versions``.
    :raise ValidationError: the resulting config is refused by the resulting type, or names a missing file.
    """
    with db.transaction() as conn:
        _lock_workflow(conn, workflow_id)
        current = db.one(conn, "get_node_for_update", workflow_id=workflow_id, node_id=node_id)
        if current is None:
            raise NotFound("Node not found")
        node_type = current["node_type"] if node_type is None else node_type
        config = current["config"] if config is None else config
        warnings = _checked_config(node_type, config)
        _check_file_exists(conn, node_type, config)
        row = db.one(
            conn,
            "update_node",
            workflow_id=workflow_id,
            node_id=node_id,
            node_type=node_type,
            config=Jsonb(config),
            expected_versions=versions,
        )
        if row is None:
            raise precondition_failed(current["version"])
    return row, warnings


@bp.delete("/workflows/<workflow_id>/nodes/<node_id>")
@contract.operation("Delete a node; later nodes move up one position", headers=(contract.IF_MATCH,))
@contract.responds(204, None, "Deleted.")
@contract.errors(404, 412, 503)
def delete_node(workflow_id: str, node_id: str) -> tuple[str, int]:
    """Delete a node; the nodes after it move up one position. 204. Its run history stays, with node_id null.

    :raise 404: unknown workflow or node.
    :raise 412: ``If-Match`` names a node version that is no longer current (nothing deleted).
    """
    delete(parse_id(workflow_id, "Workflow"), parse_id(node_id, "Node"), expected_versions())
    return "", 204


def delete(workflow_id: uuid.UUID, node_id: uuid.UUID, versions: list[int] | None) -> None:
    """Delete a node if its version is among ``versions`` (None: any); the nodes after it move up one position.

    :raise NotFound: unknown workflow or node.
    :raise PreconditionFailed: the node's version is not among ``versions``.
    """
    with db.transaction() as conn:
        _lock_workflow(conn, workflow_id)
        deleted = db.one(conn, "delete_node", workflow_id=workflow_id, node_id=node_id, expected_versions=versions)
        if deleted is None:
            current = db.one(conn, "get_node_for_update", workflow_id=workflow_id, node_id=node_id)
            raise NotFound("Node not found") if current is None else precondition_failed(current["version"])
        db.execute(conn, "close_position_gap", workflow_id=workflow_id, position=deleted["position"])


@bp.put("/workflows/<workflow_id>/nodes/order")
@contract.operation(
    "Reorder a workflow's nodes (node_ids names every node once)",
    headers=(contract.IF_MATCH,),
    body=schemas.NodeOrderSchema,
)
@contract.responds(200, schemas.WorkflowWithNodesSchema, "The workflow in its new order.", "ETag")
@contract.errors(400, 404, 412, 413, 415, 422, 503)
def reorder_nodes(workflow_id: str) -> Response:
    """Put the workflow's nodes in the order of ``node_ids``; 200 with the workflow and its new ``ETag``.

    ``node_ids`` must name every node of the workflow exactly once. With ``If-Match`` (the workflow's ETag),
    only if the workflow is unchanged since.

    :raise 404: unknown workflow.
    :raise 412: ``If-Match`` names a workflow version that is no longer current (nothing changed).
    :raise 422: ``node_ids`` repeats a node, names one not in the workflow, or leaves one out.
    """
    workflow_uuid = parse_id(workflow_id, "Workflow")
    wanted = load_json(_order_schema)["node_ids"]
    return row_json_response(reorder(workflow_uuid, wanted, expected_versions()))


def reorder(workflow_id: uuid.UUID, wanted: list[uuid.UUID], versions: list[int] | None) -> dict[str, Any]:
    """Put ``workflow_id``'s nodes in the order of the node ids ``wanted`` if the workflow's version is among
    ``versions`` (None: any); return the workflow's row (``body`` with its nodes, ``version``).

    :raise NotFound: unknown workflow.
    :raise PreconditionFailed: the workflow's version is not among ``versions``.
    :raise Unprocessable: ``wanted`` repeats a node, names one not in the workflow, or leaves one out.
    """
    with db.transaction() as conn:
        _lock_workflow(conn, workflow_id, versions)
        existing = [row["id"] for row in db.many(conn, "list_node_ids", workflow_id=workflow_id)]
        problems = _order_problems(wanted, existing)
        if problems:
            raise Unprocessable(
                "node_ids must name every node of the workflow exactly once: " + "; ".join(problems) + "."
            )
        db.execute(conn, "reorder_nodes", workflow_id=workflow_id, node_ids=wanted)
        row = db.one(conn, "get_workflow_json", workflow_id=workflow_id)
    assert row is not None  # the workflow is locked by this transaction (_lock_workflow): it exists
    return row


def _order_problems(wanted: list[uuid.UUID], existing: list[uuid.UUID]) -> list[str]:
    """Return what is wrong with ``wanted`` as an ordering of ``existing`` (empty when nothing is)."""
    problems = []
    seen, repeated = set(), []
    for node_id in wanted:
        if node_id in seen and node_id not in repeated:
            repeated.append(node_id)
        seen.add(node_id)
    if repeated:
        problems.append("repeated " + ", ".join(map(str, repeated)))
    unknown = [str(n) for n in wanted if n not in set(existing)]
    if unknown:
        problems.append("not in this workflow " + ", ".join(unknown))
    missing = [str(n) for n in existing if n not in seen]
    if missing:
        problems.append("missing " + ", ".join(missing))
    return problems
