"""marshmallow schemas: one per request body and one per node type's ``config``.

Unknown keys are rejected (marshmallow's default ``unknown=RAISE``), so a typo is a 422, not a silent no-op.
"""

import math

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from . import formatter

NODE_TYPES = ("extract_text", "generative_ai", "formatter")


class Text(fields.String):
    """A string PostgreSQL can store: no NUL characters and no unpaired surrogates."""

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in value:
            raise ValidationError("Must not contain NUL (\\u0000) characters.")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError("Must be valid Unicode (unpaired surrogate escape).") from None
        return value


class StrictFloat(fields.Float):
    """A JSON number (not a string, not a boolean), finite."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError("Not a valid number.")
        if not math.isfinite(value):
            raise ValidationError("Must be a finite number.")
        return super()._deserialize(value, attr, data, **kwargs)


def _not_blank(value):
    if value and not value.strip():
        raise ValidationError("Must not be blank.")


# --- node configs -------------------------------------------------------------------------------------------


class FormatterConfigSchema(Schema):
    """``formatter``: rules applied in order. ``{}`` means ``["uppercase"]``; ``{"rules": []}`` passes text through."""

    rules = fields.List(
        fields.String(validate=validate.OneOf(formatter.RULES)),
        load_default=lambda: list(formatter.DEFAULT_RULES),
        validate=validate.Length(max=50),
        metadata={"description": "Rules applied in order: " + ", ".join(formatter.RULES)},
    )


class GenerativeAIConfigSchema(Schema):
    """``generative_ai``: ``{text}`` in the prompt is replaced by the node's input; without it the input follows."""

    prompt = Text(required=True, validate=validate.Length(min=1, max=4000))
    model = Text(required=True, validate=[validate.Length(min=1, max=200), _not_blank])
    temperature = StrictFloat(load_default=1.0, validate=validate.Range(min=0, max=2))
    max_tokens = fields.Integer(strict=True, load_default=1024, validate=validate.Range(min=1, max=4096))
    top_p = StrictFloat(load_default=1.0, validate=validate.Range(min=0, max=1))


class ExtractTextConfigSchema(Schema):
    """``extract_text``: the text of an uploaded PDF (``file_id``), else the node's input unchanged."""

    file_id = fields.UUID(load_default=None)


CONFIG_SCHEMAS = {
    "extract_text": ExtractTextConfigSchema(),
    "generative_ai": GenerativeAIConfigSchema(),
    "formatter": FormatterConfigSchema(),
}


def load_config(node_type, config):
    """Return ``config`` validated for ``node_type`` with defaults applied (what an executor receives).

    :raise ValidationError: when the config is invalid for the type.
    """
    return CONFIG_SCHEMAS[node_type].load(config)


# --- request bodies -----------------------------------------------------------------------------------------


class WorkflowCreateSchema(Schema):
    """Body of ``POST /workflows``."""

    name = Text(required=True, validate=[validate.Length(min=1, max=200), _not_blank])


class NodeCreateSchema(Schema):
    """Body of ``POST /workflows/{id}/nodes``: ``config`` is validated by the schema of ``node_type``.

    The loaded ``config`` is the client's object unchanged (it is stored as sent); defaults apply at execution.
    """

    node_type = fields.String(required=True, validate=validate.OneOf(NODE_TYPES))
    config = fields.Dict(required=True)

    @validates_schema
    def _config_matches_type(self, data, **kwargs):
        try:
            CONFIG_SCHEMAS[data["node_type"]].load(data["config"])
        except ValidationError as exc:
            raise ValidationError(exc.messages, field_name="config") from None


class RunRequestSchema(Schema):
    """Body of ``POST /workflows/{id}/run`` (optional): the text the first node receives, and a file that
    ``extract_text`` nodes without a ``file_id`` of their own read."""

    input_text = Text(load_default="")
    file_id = fields.UUID(load_default=None)


class WorkflowPatchSchema(Schema):
    """Body of ``PATCH /workflows/{id}``."""

    name = Text(required=True, validate=[validate.Length(min=1, max=200), _not_blank])


class NodePatchSchema(Schema):
    """Body of ``PATCH /workflows/{id}/nodes/{node_id}``: a new ``config`` (replacing the old one), a new
    ``node_type``, or both; the resulting config must be valid for the resulting type (checked by the view)."""

    node_type = fields.String(validate=validate.OneOf(NODE_TYPES))
    config = fields.Dict()

    @validates_schema
    def _something_to_change(self, data, **kwargs):
        if not data:
            raise ValidationError("Give node_type, config, or both.", field_name="_schema")


class NodeOrderSchema(Schema):
    """Body of ``PUT /workflows/{id}/nodes/order``: every node id of the workflow, once each, in the new order."""

    node_ids = fields.List(fields.UUID(), required=True, validate=validate.Length(max=10_000))


class PageQuerySchema(Schema):
    """Query of a paginated list: ``limit`` (1..200) and the opaque ``cursor`` of the previous page."""

    limit = fields.Integer(validate=validate.Range(min=1, max=200))
    cursor = fields.String(validate=validate.Length(min=1, max=200))


class RunsQuerySchema(PageQuerySchema):
    """Query of ``GET /workflows/{id}/runs``: ``status`` filters; ``limit`` or ``cursor`` turn pagination on."""

    status = fields.String(validate=validate.OneOf(("Pending", "Running", "Succeeded", "Failed", "Cancelled")))
