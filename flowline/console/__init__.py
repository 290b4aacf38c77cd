"""The console (``/console/``): server-rendered pages to build, run and watch workflows.

Pages call the same operations as the JSON API (``flowline.api.workflows``, ``nodes``, ``runs``, ``files``,
``schedules``, ``webhooks``) and its named queries; a shape only a page needs is a named query of its own in the
resource's ``sql/*.sql``. Sessions and CSRF tokens exist only here (guard); the JSON API stays bearer-only.
"""

from flask import Flask

from . import guard, runs, schedules, usage, webhooks, workflows  # noqa: F401  (their routes register on the blueprint)
from .blueprint import NAME, bp

__all__ = ["NAME", "bp", "install"]


def install(app: Flask) -> None:
    """Register the console on ``app``: its blueprint, its session cookie, CSRF and page headers."""
    guard.install(app)
    app.register_blueprint(bp)
