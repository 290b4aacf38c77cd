"""Debian's Chromium, driven by Playwright."""

import os
import shutil

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def launch_chromium(playwright, *args):
    """Return a headless Chromium started with ``args`` besides the ones every test needs."""
    # --no-sandbox: CI runs the suite as root; the others keep Chromium off the network it cannot reach.
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            *args,
        ],
    )
