"""The API's OpenAPI 3 document."""

from flask import Blueprint, jsonify

from .. import openapi

bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json")
def openapi_json():
    """Return the OpenAPI 3 document of this API (built once per process from the marshmallow schemas)."""
    return jsonify(openapi.document())
