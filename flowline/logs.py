"""Logging: every line carries the request id of the request it belongs to."""

import logging

from flask import g, has_request_context


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record ("-" outside a request)."""

    def filter(self, record):
        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True


def configure(level):
    """Send Flowline's logs to stderr with the request id, at ``level``; idempotent."""
    logger = logging.getLogger("flowline")
    logger.setLevel(level)
    if not any(isinstance(f, RequestIdFilter) for h in logger.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.addFilter(RequestIdFilter())
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [request_id=%(request_id)s] %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
