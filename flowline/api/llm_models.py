"""LLM models: each model's per-minute budget (requests and tokens, shared by every worker through the database)
and its prices per million tokens, which cost each generative_ai step's usage.

``{model}`` is the name a generative_ai step calls (its config's ``model``, else LLM_MODEL); names may contain
``/`` (OpenRouter's ``openai/gpt-4o``), so the routes take the rest of the path. A model without a row has no
budget and no price.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, jsonify
from flask.blueprints import BlueprintSetupState
from marshmallow import ValidationError
from werkzeug.routing import PathConverter

from ..data import db
from . import contract, schemas
from .errors import NotFound
from .http import load_json

bp = Blueprint("llm_models", __name__)


class ModelNameConverter(PathConverter):
    """A model's name: the rest of the path, slashes, line breaks and all, so every name reaches the view (which
    answers 422 or 404 for one no model can have) instead of falling through to the router's 404."""

    regex = r"[\s\S]+?"
    # Spans slashes: werkzeug would otherwise match it within one path segment (its regex names no "/").
    part_isolating = False


@bp.record_once
def _install_converter(state: BlueprintSetupState) -> None:
    state.app.url_map.converters["model_name"] = ModelNameConverter


# A doubled slash is part of the name, never redirected (merge_slashes=False on each route).

_put_schema = schemas.LLMModelPutSchema()

_NO_ROW = "This model has no budget and no price (PUT /llm-models/{model} sets them)."

# The longest model name (a generative_ai node's config takes the same).
MAX_MODEL_NAME = 200


def model_name_problem(model: str) -> str | None:
    """Return why ``model`` cannot be a model's name (as a node's config would refuse it), or None."""
    if not 1 <= len(model) <= MAX_MODEL_NAME:
        return f"Length must be between 1 and {MAX_MODEL_NAME}."
    if not model.strip() or not model.isprintable():
        return "Must be printable and not blank."
    return None


@bp.put("/llm-models/<model_name:model>", merge_slashes=False)
@contract.operation(
    "Set a model's per-minute budget and prices (replacing what it had; a key left out is null)",
    body=schemas.LLMModelPutSchema,
)
@contract.responds(200, schemas.LLMModelSchema, "The model's budget and prices as stored.")
@contract.errors(400, 413, 415, 422, 503)
def put_llm_model(model: str) -> Response:
    """Replace ``model``'s budget and prices; 200 with what is stored. Every worker applies it within a second.

    :raise 422: no key given, an unknown key, a limit that is not a positive integer, a price that is not a
        positive number, or a model name longer than 200 characters.
    """
    check_model_name(model)
    return jsonify(put(model, load_json(_put_schema)))


def check_model_name(model: str) -> None:
    """Check ``model`` as a model's name.

    :raise ValidationError: a name a node's config would refuse (keyed ``model``).
    """
    problem = model_name_problem(model)
    if problem:
        raise ValidationError({"model": [problem]})


def put(model: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """Replace ``model``'s budget and prices with ``data`` (LLMModelPutSchema's load, the name checked with
    check_model_name); return the stored row."""
    with db.transaction() as conn:
        row = db.one(
            conn,
            "put_llm_model",
            model=model,
            requests_per_minute=data["requests_per_minute"],
            tokens_per_minute=data["tokens_per_minute"],
            usd_per_million_input_tokens=data["usd_per_million_input_tokens"],
            usd_per_million_output_tokens=data["usd_per_million_output_tokens"],
        )
    assert row is not None  # an upsert returns its row
    return row


@bp.get("/llm-models")
@contract.operation("Every model with a budget or a price, by name")
@contract.responds(200, schemas.LLMModelListSchema, "The models.")
@contract.errors(503)
def list_llm_models() -> Response:
    """Return ``{llm_models: [...]}``, every model with a budget or a price, by name."""
    with db.connection() as conn:
        rows = db.many(conn, "list_llm_models")
    return jsonify({"llm_models": rows})


@bp.get("/llm-models/<model_name:model>", merge_slashes=False)
@contract.operation("Read a model's budget and prices")
@contract.responds(200, schemas.LLMModelSchema, "The model's budget and prices.")
@contract.errors(404, 503)
def get_llm_model(model: str) -> Response:
    """Return ``model``'s budget and prices.

    :raise 404: a model with no budget and no price.
    """
    if model_name_problem(model):
        raise NotFound(_NO_ROW)
    with db.connection() as conn:
        row = db.one(conn, "get_llm_model", model=model)
    if row is None:
        raise NotFound(_NO_ROW)
    return jsonify(row)


@bp.delete("/llm-models/<model_name:model>", merge_slashes=False)
@contract.operation("Remove a model's budget and prices (it has no limit from then on)")
@contract.responds(204, None, "Removed.")
@contract.errors(404, 503)
def delete_llm_model(model: str) -> tuple[str, int]:
    """Remove ``model``'s budget and prices; 204.

    :raise 404: a model with no budget and no price.
    """
    delete(model)
    return "", 204


def delete(model: str) -> None:
    """Remove ``model``'s budget and prices.

    :raise NotFound: a model with no budget and no price (or a name no model can have).
    """
    if model_name_problem(model):
        raise NotFound(_NO_ROW)
    with db.transaction() as conn:
        row = db.one(conn, "delete_llm_model", model=model)
    if row is None:
        raise NotFound(_NO_ROW)
