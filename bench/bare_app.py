"""The bare-view ceiling for ``bench/http_bench.py``: the first two benchmarked routes with nothing but the stack.

Served exactly like Flowline (``gunicorn -c gunicorn.conf.py 'bench.bare_app:create_app()'``), so the
same workers, threads and hooks apply (the hooks open and close the pool found at ``flowline.data.db.EXTENSION``).
Each view runs the *same* named query as Flowline's view (loaded from ``sql/*.sql`` by ``flowline.sql``) on a
pooled connection and returns the body directly: no request id, no schema validation, no UUID parsing, no error
handlers, no pool health check. Whatever Flowline's views lose against these is the cost of Flowline's own code.

``BARE_POOL_SIZE`` (default 1) is the pool's size per worker: the issue asks for one pooled connection.
"""

import json
import os
from datetime import datetime

from flask import Flask, Response, request
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from flowline.core.config import connection_kwargs, from_env
from flowline.data import db
from flowline.data.sql import QUERIES

CREATE_WORKFLOW = QUERIES["create_workflow"].text
GET_WORKFLOW_JSON = QUERIES["get_workflow_json"].text


def _to_json(value):
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)  # UUID


def create_app():
    settings = from_env()
    size = int(os.environ.get("BARE_POOL_SIZE", "1"))
    pool = ConnectionPool(
        connection_kwargs(settings.database_url, settings.statement_timeout_ms, "flowline-bare"),
        min_size=size,
        max_size=size,
        timeout=settings.db_pool_timeout_s,
        kwargs={"row_factory": dict_row, "autocommit": True},
        open=False,
        name="flowline-bare",
    )
    app = Flask(__name__)
    app.extensions[db.EXTENSION] = pool  # gunicorn.conf.py's post_worker_init opens it, worker_exit closes it

    @app.post("/workflows")
    def create_workflow():
        name = json.loads(request.get_data())["name"]
        with pool.connection() as conn:
            row = conn.execute(CREATE_WORKFLOW, {"name": name}).fetchone()
        return Response(
            json.dumps(row, default=_to_json), mimetype="application/json", headers={"ETag": f'"{row["version"]}"'}
        )

    @app.get("/workflows/<workflow_id>")
    def get_workflow(workflow_id):
        with pool.connection() as conn:
            row = conn.execute(GET_WORKFLOW_JSON, {"workflow_id": workflow_id}).fetchone()
        if row is None:
            return Response('{"detail": "Workflow not found"}', status=404, mimetype="application/json")
        return Response(row["body"], mimetype="application/json", headers={"ETag": f'"{row["version"]}"'})

    return app
