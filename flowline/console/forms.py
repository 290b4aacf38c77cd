"""The node forms: one per node type, built from that type's config schema (flowline/nodes/), so a new type or a
new config key gets its form field without a template change.

A field's kind follows its marshmallow field: a list of choices is an ordered choice (one select per place), a
number a number input with the schema's bounds, a file key (``NodeType.file_keys``) a select of the uploaded files,
a string a text input (a text area past 200 characters). A field left empty is left out of the config, so the
type's default applies, as an API client leaving the key out gets it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from marshmallow import ValidationError, fields, validate

from .. import nodes

if TYPE_CHECKING:
    from werkzeug.datastructures import MultiDict

    from ..nodes.base import NodeType

# Extra empty places an ordered choice offers beyond the ones already chosen.
_SPARE_PLACES = 3
_TEXTAREA_PAST = 200


@dataclass
class FormField:
    """One input of a node form."""

    name: str
    kind: str  # "text", "textarea", "number", "choices" (ordered), "file"
    label: str
    # The label of one place of an ordered choice ("Rule" for "Rules").
    item_label: str = ""
    description: str = ""
    choices: tuple = ()
    minimum: object = None
    maximum: object = None
    max_length: object = None
    step: str = "any"
    default: object = None
    # What the form shows: the stored or submitted value, as text (a list of texts for "choices").
    value: object = None
    errors: list = field(default_factory=list)


def _validators(schema_field: fields.Field) -> list[Any]:
    """Return the validators of ``schema_field`` as a list (marshmallow allows one, a list, or none)."""
    found = schema_field.validate
    return list(found) if isinstance(found, (list, tuple)) else [found] if found else []


def _bound(schema_field: fields.Field, kind: type, attribute: str) -> Any:
    """Return ``attribute`` of the first validator of type ``kind`` of ``schema_field``, or None."""
    for validator in _validators(schema_field):
        if isinstance(validator, kind):
            return getattr(validator, attribute)
    return None


def _default(schema_field: fields.Field) -> object:
    """Return the value ``schema_field`` loads when its key is left out, or None when it has none."""
    default = schema_field.load_default
    if default is fields.missing_:
        return None
    return default() if callable(default) else default


def _kind(node_type: NodeType, name: str, schema_field: fields.Field) -> str:
    """Return the FormField kind of config key ``name`` of ``node_type``."""
    if name in node_type.file_keys:
        return "file"
    if isinstance(schema_field, fields.List):
        return "choices"
    if isinstance(schema_field, (fields.Integer, fields.Float)):
        return "number"
    max_length = _bound(schema_field, validate.Length, "max")
    return "textarea" if max_length and max_length > _TEXTAREA_PAST else "text"


def form_fields(node_type_name: str, config: dict[str, Any], errors: dict[str, Any] | None = None) -> list[FormField]:
    """Return the FormFields of ``node_type_name``'s form showing ``config`` (a stored or submitted config) and
    ``errors`` (the API's 422 messages for ``config``, keyed by field)."""
    node_type = nodes.BY_NAME[node_type_name]
    errors = errors or {}
    result = []
    for name, schema_field in node_type.config_schema.fields.items():
        kind = _kind(node_type, name, schema_field)
        spec = FormField(
            name=name,
            kind=kind,
            label="PDF file" if kind == "file" else name.replace("_", " ").capitalize(),
            # The descriptions are the OpenAPI document's Markdown: shown here as plain text.
            description=schema_field.metadata.get("description", "").replace("`", ""),
            default=_default(schema_field),
            max_length=_bound(schema_field, validate.Length, "max"),
            minimum=_bound(schema_field, validate.Range, "min"),
            maximum=_bound(schema_field, validate.Range, "max"),
        )
        if kind == "choices":
            assert isinstance(schema_field, fields.List)  # _kind names only a List field "choices"
            spec.item_label = spec.label.removesuffix("s")
            spec.choices = tuple(_bound(schema_field.inner, validate.OneOf, "choices") or ())
            chosen = config.get(name, spec.default) or []
            spec.value = [str(v) for v in chosen] if isinstance(chosen, list) else [str(chosen)]
            spec.value += [""] * _SPARE_PLACES
        else:
            if kind == "number" and isinstance(schema_field, fields.Integer):
                spec.step = "1"
            spec.value = _shown(config.get(name))
        messages = errors.get(name, [])
        spec.errors = messages if isinstance(messages, list) else [str(messages)]
        result.append(spec)
    return result


def _shown(value: object) -> str:
    """Return a config value as a form shows it: 3 for 3.0, nothing for None."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def ignored_keys(node_type_name: str, config: dict[str, Any]) -> list[str]:
    """Return the keys of ``config`` its type does not use (an earlier client's, kept as sent)."""
    return nodes.BY_NAME[node_type_name].ignored_keys(config)


def form_number(raw: str, integer: bool) -> int | float | str:
    """Return ``raw`` as the JSON number it spells, or ``raw`` itself (the type's schema then says what is wrong)."""
    try:
        return int(raw) if integer else float(raw)
    except ValueError:
        try:
            as_float = float(raw)
        except ValueError:
            return raw
        return int(as_float) if integer and as_float.is_integer() else as_float


def config_from_form(
    node_type_name: str, form: MultiDict[str, str], stored: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Return the config a submitted node form describes: its fields (empty ones left out, so defaults apply) and
    the keys of ``stored`` (the node's config before the edit) that the type does not use, kept as they were."""
    node_type = nodes.BY_NAME[node_type_name]
    stored = stored or {}
    config = {key: stored[key] for key in node_type.ignored_keys(stored)}
    for name, schema_field in node_type.config_schema.fields.items():
        kind = _kind(node_type, name, schema_field)
        if kind == "choices":
            config[name] = [value for value in form.getlist(name) if value]
            continue
        raw = form.get(name, "")
        if raw.strip() == "":
            continue
        if kind != "textarea":
            raw = raw.strip()
        if kind == "number":
            config[name] = form_number(raw, isinstance(schema_field, fields.Integer))
        else:
            config[name] = raw
    return config


def field_messages(exc: ValidationError) -> dict[str, list[str]]:
    """Return the messages of a schema's ``exc`` by top-level field, a nested field's flattened into its own list
    (what a form shows beside each field)."""

    def flat(messages: object) -> list[str]:
        if isinstance(messages, dict):
            return [m for value in messages.values() for m in flat(value)]
        if isinstance(messages, list):
            return [m for value in messages for m in flat(value)]
        return [str(messages)]

    return {str(field): flat(messages) for field, messages in exc.normalized_messages().items()}
