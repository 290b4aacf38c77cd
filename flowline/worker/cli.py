"""The worker's two commands: ``flask --app app worker`` and ``python -m flowline.worker``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

import click
from flask import current_app
from flask.cli import with_appcontext

from ..core import config as settings
from ..core import logs
from .process import Worker

if TYPE_CHECKING:
    from ..core.config import Settings


def main(config: Settings, concurrency: int | None = None) -> int:
    """Run a worker in this process until it is stopped by a signal; return its exit status."""
    logs.configure(config.log_level, config.log_format, logs.secrets_of(config))
    worker = Worker(config, concurrency=concurrency)
    worker.install_signal_handlers()
    return worker.run()


def from_command_line(argv: Sequence[str] | None = None) -> int:
    """``python -m flowline.worker [--concurrency N]``, with settings from the environment; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m flowline.worker", description="Execute async runs from the queue until SIGTERM or SIGINT."
    )
    parser.add_argument(
        "--concurrency", type=int, default=None, help="run threads in this process (default: WORKER_CONCURRENCY, 2)"
    )
    args = parser.parse_args(argv)
    if args.concurrency is not None and args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    try:
        config = settings.from_env()
    except settings.ConfigError as exc:
        parser.error(str(exc))
    if not config.database_url:
        parser.error("DATABASE_URL is not set (a libpq URL such as postgresql://user@host/db)")
    return main(config, args.concurrency)


@click.command("worker")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Run threads in this process (default: WORKER_CONCURRENCY, 2).",
)
@with_appcontext
def worker_command(concurrency: int | None) -> NoReturn:
    """Execute async runs from the queue until SIGTERM or SIGINT."""
    sys.exit(main(settings.settings_of(current_app), concurrency))
