"""marshmallow fields shared by request bodies and node configs: text PostgreSQL can store, strict numbers."""

import math
from collections.abc import Mapping
from typing import Any

from marshmallow import ValidationError, fields


def unstorable_reason(text: str) -> str | None:
    """Return why PostgreSQL cannot store ``text`` (a NUL character, an unpaired surrogate), or None if it can."""
    if "\x00" in text:
        return "Must not contain NUL (\\u0000) characters."
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "Must be valid Unicode (unpaired surrogate escape)."
    return None


class Text(fields.String):
    """A string PostgreSQL can store: no NUL characters and no unpaired surrogates."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> str:
        value = super()._deserialize(value, attr, data, **kwargs)
        reason = unstorable_reason(value)
        if reason:
            raise ValidationError(reason)
        return value


class StrictFloat(fields.Float):
    """A JSON number (not a string, not a boolean), finite."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError("Not a valid number.")
        if not math.isfinite(value):
            raise ValidationError("Must be a finite number.")
        return super()._deserialize(value, attr, data, **kwargs)


# The largest value of PostgreSQL's integer: what an integer column (a count, a limit) can hold.
PG_INTEGER_MAX = 2**31 - 1


class StrictInteger(fields.Integer):
    """A JSON integer (not a string, not a boolean, not a number with a fraction)."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("Not a valid integer.")
        return super()._deserialize(value, attr, data, **kwargs)


def not_blank(value: str) -> None:
    """A validator: a string that is not only whitespace."""
    if value and not value.strip():
        raise ValidationError("Must not be blank.")
