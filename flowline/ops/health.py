"""Health: liveness (process up) and readiness (database reachable, schema current)."""

import logging

import psycopg
from flask import Blueprint, Response, current_app, jsonify
from psycopg_pool import PoolTimeout

from ..api import contract, schemas
from ..api.errors import error_response, unavailable_response
from ..data import db, migrations, partitions, replica

bp = Blueprint("health", __name__)
log = logging.getLogger("flowline.health")


@bp.get("/livez")
@contract.operation("Liveness: the process serves requests (no database)")
@contract.responds(200, schemas.LivenessSchema, "Alive.")
def livez() -> Response:
    """200 while the process serves requests; touches no database."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@contract.operation("Readiness: the database answers and no migration is pending")
@contract.responds(200, schemas.ReadinessSchema, "Ready.")
@contract.responds(503, schemas.ErrorSchema, "Not ready: `checks` names the failing check.")
def readyz() -> Response:
    """200 when the database answers and no migration is pending; 503 naming the failing check otherwise. The
    replica and the history partitions are reported beside the checks, never making it not ready."""
    try:
        with db.connection() as conn:
            db.one(conn, "ping")
            todo = migrations.pending(conn)
            ahead = None if todo else partitions.count_ahead(conn)
    except (PoolTimeout, psycopg.OperationalError) as exc:
        log.warning("readiness: database unreachable (%s)", type(exc).__name__)
        return unavailable_response("The database is unreachable.", checks={"database": "unreachable"})
    if todo:
        log.error("schema is behind: %d migration(s) pending (%s); run `make migrate`", len(todo), ", ".join(todo))
        return error_response(
            503,
            f"{len(todo)} migration(s) pending: {', '.join(todo)}; run `make migrate`.",
            checks={"database": "ok", "migrations": "pending"},
        )
    return jsonify(
        {
            "status": "ready",
            "checks": {"database": "ok", "migrations": "current"},
            "llm_provider": current_app.extensions["flowline.provider"].name,
            # Not a check: reads go to the primary while the replica lags or is down (flowline/data/replica.py).
            "replica": replica.status(),
            # Not a check either: runs are served until the last partition is full; the workers make more.
            "history_partitions": _history_partitions(ahead),
        }
    )


def _history_partitions(ahead: int | None) -> str:
    """Return how /readyz reports ``ahead`` history partitions: "ok", or "running out" (logged) under
    partitions.WARN_UNDER."""
    if ahead is None or ahead >= partitions.WARN_UNDER:
        return "ok"
    log.warning(
        "only %d history partition(s) ahead: are workers running? (HISTORY_PARTITIONS_AHEAD; README, Scaling Flowline)",
        ahead,
    )
    return "running out"
