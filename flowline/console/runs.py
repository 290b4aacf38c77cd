"""Console pages for runs: one run's page (status, output or error, its steps)."""

import json

from flask import render_template

from ..api.errors import NotFound
from ..api.http import parse_id
from ..data import db
from .blueprint import bp


@bp.get("/runs/<run_id>")
def run(run_id):
    with db.connection() as conn:
        row = db.one(conn, "get_run_json", run_id=parse_id(run_id, "Run"))
    if row is None:
        raise NotFound("Run not found")
    detail = json.loads(row["body"])
    return render_template("console/run.html", run=detail["run"], steps=detail["steps"])
