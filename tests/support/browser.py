"""Debian's Chromium, driven by Playwright."""

import os
import shutil

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def launch_chromium(playwright, *args):
    """Return a headless Chromium started with ``args`` besides the ones every test needs."""
    # Chromium's sandbox cannot start as root (CI runs the suite as root); /dev/shm may be small in a container;
    # the rest keep Chromium off the network it cannot reach.
    as_root = ["--no-sandbox"] if os.geteuid() == 0 else []
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            *as_root,
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            *args,
        ],
    )
