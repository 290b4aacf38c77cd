"""``formatter``: pure text transformations (rules) applied in order."""

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from marshmallow import Schema, fields, validate

from .base import NodeContext, NodeType

# U+FF01..U+FF5E are the full-width forms of U+0021..U+007E; U+3000 is the ideographic space.
_FULL_TO_HALF = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
_HALF_TO_FULL = {half: full for full, half in _FULL_TO_HALF.items()}

# Runs of width forms (ideographic space, full-width ASCII, half-width katakana and punctuation, full-width
# signs). U+FFE3 (full-width macron) is left out: NFKC turns it into a space and a combining macron.
_WIDTH_FORMS = re.compile("[\u3000\uff01-\uff5e\uff61-\uff9f\uffe0-\uffe2\uffe4-\uffe6]+")
_WHITESPACE = re.compile(r"\s+")


def normalize_width(text: str) -> str:
    """NFKC applied only to runs of width forms: ASCII becomes half-width, katakana full-width; ①, ™, ½ stay."""
    return _WIDTH_FORMS.sub(lambda m: unicodedata.normalize("NFKC", m.group()), text)


RULE_FUNCTIONS: dict[str, Callable[[str], str]] = {
    "uppercase": str.upper,
    "lowercase": str.lower,
    "full_to_half": lambda text: text.translate(_FULL_TO_HALF),
    "half_to_full": lambda text: text.translate(_HALF_TO_FULL),
    "normalize_width": normalize_width,
    "strip": str.strip,
    "collapse_whitespace": lambda text: _WHITESPACE.sub(" ", text),
    "nfkc": lambda text: unicodedata.normalize("NFKC", text),
}
RULES = tuple(RULE_FUNCTIONS)
DEFAULT_RULES = ("uppercase",)


def apply(rules: Iterable[str], text: str) -> str:
    """Return ``text`` with each of ``rules`` applied in order."""
    for rule in rules:
        text = RULE_FUNCTIONS[rule](text)
    return text


class FormatterConfigSchema(Schema):
    """``formatter``: rules applied in order. ``{}`` means ``["uppercase"]``; ``{"rules": []}`` passes text through."""

    rules = fields.List(
        fields.String(validate=validate.OneOf(RULES)),
        load_default=lambda: list(DEFAULT_RULES),
        validate=validate.Length(max=50),
        metadata={"description": "Rules applied in order: " + ", ".join(RULES)},
    )


def run(config: Mapping[str, Any], text: str, ctx: NodeContext) -> tuple[str, str | None]:
    """Return ``text`` with the config's rules applied."""
    return apply(config["rules"], text), None


NODE_TYPE = NodeType(
    name="formatter",
    config_schema=FormatterConfigSchema(),
    run=run,
    waits_outside=False,
    file_keys=(),
    component="Formatter",
    description="A `formatter` node: its rules applied to the input in order (`{}`: uppercase).",
)
