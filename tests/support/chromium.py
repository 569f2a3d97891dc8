"""Debian's Chromium as the page tests and the page benchmark launch it through Playwright
(never `playwright install`): where it is and the flags for a headless run in a container."""

from __future__ import annotations

import shutil

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
