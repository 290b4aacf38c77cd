"""``python -m flowline.worker [--concurrency N]``."""

import sys

from .cli import from_command_line

sys.exit(from_command_line())
