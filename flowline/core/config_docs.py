"""`make docs`: write .env.example and the README's configuration table from the settings table (config.TABLE).

``python -m flowline.core.config_docs`` rewrites both files; tests/unit/test_config_docs.py fails when either
differs from what this module renders.
"""

import re
import sys
from pathlib import Path
from typing import Any

from .config import TABLE, Derived, Setting

ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = ROOT / ".env.example"
README = ROOT / "README.md"
# The README's generated part lies between these two lines.
BEGIN = "<!-- settings: generated from flowline/core/config.py by `make docs` -->"
END = "<!-- end settings -->"

_ENV_HEADER = """\
# Flowline's settings, read from the environment. Copy to .env: `docker compose` reads it on its own; for
# `make run` or plain gunicorn, export it first (`set -a; . ./.env; set +a`).
# A commented-out line shows the default; uncomment only what you change. An empty value also means the default,
# unless the line above says otherwise.
# Generated from flowline/core/config.py by `make docs`: change a setting there, not here.
"""
_SECRET = " Secret: never logged or shown."
# A README link to one of its sections, e.g. [Leases](#leases).
_README_LINK = re.compile(r"\[([^\]]+)\]\(#[^)]+\)")


def _env_text(value: Any) -> str:
    """Return ``value`` as it is written in the environment."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(_env_text(item) for item in value)
    return str(value)


def shown_value(setting: Setting) -> str:
    """Return the value .env.example shows for ``setting``: its default as gunicorn's processes get it with every
    other setting at its default (or its example, when it has one)."""
    if setting.example is not None:
        return setting.example
    if isinstance(setting.default, Derived):
        defaults = {s.attribute: s.default for s in TABLE if not isinstance(s.default, Derived)}
        return _env_text(setting.default.compute(defaults, True))
    return _env_text(setting.default)


def _meaning(setting: Setting) -> str:
    return setting.meaning + (_SECRET if setting.secret else "")


def render_env_example() -> str:
    """Return the text of .env.example: every variable of the table, commented out at its default, by section."""
    lines = [_ENV_HEADER.rstrip("\n")]
    section = None
    for setting in TABLE:
        if setting.section != section:
            section = setting.section
            lines += ["", f"# --- {section} ---"]
        # A README link reads as the section's name here.
        lines.append("# " + _README_LINK.sub(r"the README's \1", _meaning(setting)))
        lines.append(f"# {setting.name}={shown_value(setting)}")
    return "\n".join(lines) + "\n"


def _default_cell(setting: Setting) -> str:
    if setting.default_text is not None:
        return setting.default_text
    if isinstance(setting.default, Derived):
        return setting.default.text
    return f"`{shown_value(setting)}`" if shown_value(setting) else "(empty)"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_readme_table() -> str:
    """Return the README's configuration table (between BEGIN and END): one row per variable of the table."""
    rows = ["| Variable | Default | Read by | Meaning |", "|---|---|---|---|"]
    rows += [f"| `{s.name}` | {_default_cell(s)} | {s.scope.value} | {_cell(_meaning(s))} |" for s in TABLE]
    return "\n".join(rows) + "\n"


def readme_with_table(readme: str) -> str:
    """Return ``readme`` with the text between BEGIN and END replaced by the rendered table.

    :raise ValueError: the README has no BEGIN ... END pair.
    """
    begin, end = readme.find(BEGIN), readme.find(END)
    if begin < 0 or end < begin:
        raise ValueError(f"README.md has no {BEGIN} ... {END} pair around its configuration table")
    return readme[: begin + len(BEGIN)] + "\n" + render_readme_table() + readme[end:]


def main() -> int:
    """Rewrite .env.example and the README's configuration table; return the exit status (0)."""
    ENV_EXAMPLE.write_text(render_env_example(), encoding="utf-8")
    README.write_text(readme_with_table(README.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {ENV_EXAMPLE.name} and the configuration table of {README.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
