"""Metrics: ``GET /metrics`` in Prometheus' text format (OpenMetrics when the scraper asks for it)."""

from flask import Blueprint, Response, current_app, request

from .. import db, metrics

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def get_metrics():
    """Return every ``flowline_*`` series of this gunicorn's workers, plus the queue and the worker heartbeats read
    from the database (left out, with ``flowline_database_up 0``, when it does not answer within
    metrics.DB_TIMEOUT_S): a scrape answers 200 quickly even while the database is down.
    """
    body, content_type = metrics.render(current_app.extensions[db.EXTENSION], current_app.config["RUN_LEASE_SECONDS"],
                                        request.headers.get("Accept"))
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})
