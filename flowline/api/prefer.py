"""The ``Prefer`` request header (RFC 7240): what a client would like the server to do, never what it requires.

    Prefer: handling=strict
    Prefer: respond-async, wait=10; foo="a, b"

A request may carry several preferences in one header and several headers; they are read as one
comma-separated list (RFC 9110 §5.3), commas inside a quoted value included. Preference names are
case-insensitive and kept lowercased; a value is a token or a quoted string (its escapes undone) and an empty
value is no value (§2). When a preference is given more than once only the first counts, and anything that does
not parse is ignored, not an error: a preference never makes a request fail (§2).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from werkzeug.wrappers import Request

# A token (RFC 9110 §5.6.2) or a quoted string with its backslash escapes (§5.6.4).
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PARAMETER = re.compile(rf"\s*({_TOKEN})\s*(?:=\s*({_TOKEN}|{_QUOTED})?)?\s*")
_ESCAPE = re.compile(r"\\(.)")


@dataclass(frozen=True)
class Preference:
    """One preference: its value (None when it has none) and its parameters (lowercased names → value or None)."""

    value: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)


def _split(text: str, separator: str) -> list[str]:
    """Split ``text`` at ``separator`` characters that are not inside a quoted string."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def _word(raw: str | None) -> str | None:
    """Return a token or quoted string's value; an empty one is None (RFC 7240 §2)."""
    if raw is None:
        return None
    if raw.startswith('"'):
        raw = _ESCAPE.sub(r"\1", raw[1:-1])
    return raw or None


def _name_and_value(text: str) -> tuple[str, str | None] | None:
    """Return ``(lowercased name, value)`` of ``name[=value]``, or None when ``text`` is not one."""
    match = _PARAMETER.fullmatch(text)
    if match is None:
        return None
    return match[1].lower(), _word(match[2])


def parse(header_values: Iterable[str]) -> dict[str, Preference]:
    """Return the preferences in ``header_values`` (every ``Prefer`` header of a request, in order) as a dict of
    lowercased name → Preference; the first of a repeated preference wins and what does not parse is skipped."""
    preferences = {}
    for header in header_values:
        for item in _split(header, ","):
            first, *rest = _split(item, ";")
            head = _name_and_value(first)
            if head is None or head[0] in preferences:
                continue
            params: dict[str, str | None] = {}
            for text in rest:
                param = _name_and_value(text)
                if param is not None:
                    params.setdefault(*param)
            preferences[head[0]] = Preference(head[1], params)
    return preferences


def of_request(request: Request) -> dict[str, Preference]:
    """Return the preferences of a Flask/werkzeug ``request``'s ``Prefer`` headers."""
    return parse(request.headers.getlist("Prefer"))


def handling_is_strict(request: Request) -> bool:
    """Return True when ``request`` asks for ``Prefer: handling=strict`` (the value's case is not significant)."""
    handling = of_request(request).get("handling")
    return handling is not None and (handling.value or "").lower() == "strict"


# What a response sends back when a preference changed its outcome (RFC 7240 §3), and what it varies on.
APPLIED_HEADER = "Preference-Applied"
STRICT_APPLIED = "handling=strict"
