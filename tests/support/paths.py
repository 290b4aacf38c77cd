"""Where things are: the repository root (app.py, flowline/, README.md...) and this folder."""

from pathlib import Path

SUPPORT = Path(__file__).resolve().parent
ROOT = SUPPORT.parent.parent
