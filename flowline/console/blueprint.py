"""The console's blueprint: every console route is on it, and the rest of the app tells console requests apart by
it (``request.blueprint == NAME``), never by path: bearer auth skips them, the OpenAPI document leaves them out."""

from flask import Blueprint

NAME = "console"

bp = Blueprint(NAME, __name__, url_prefix="/console", template_folder="templates", static_folder="static")
