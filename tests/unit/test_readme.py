"""The README's promises: its tables match the code (its curl walk-through: tests/e2e/test_readme.py; its route
table, against the OpenAPI document: tests/api/test_openapi.py)."""

import re
from pathlib import Path

from flowline.core import config
from flowline.nodes import formatter

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_configuration_table():
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", README, re.M))
    gunicorn_settings = {"BIND", "WEB_CONCURRENCY", "GUNICORN_THREADS", "ACCESS_LOG"}
    assert {setting.name for setting in config.FLOWLINE_SETTINGS} | gunicorn_settings <= documented


def test_every_formatter_rule_is_documented():
    assert all(f"`{rule}`" in README for rule in formatter.RULES)
