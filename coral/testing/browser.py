"""A real headless browser for the dashboard test and bench/dashboard.py: Debian's Chromium.

Playwright drives it through `executable_path` (it cannot download its own browsers here).
CORAL_CHROMIUM names another binary.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

BROWSERS = ("/usr/lib/chromium/chromium-headless-shell", "/usr/bin/chromium-headless-shell",
            "/usr/lib/chromium/chromium", "/usr/bin/chromium")
# Root needs --no-sandbox; the rest keep Chromium off a network it cannot reach.
BROWSER_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]


def find_browser() -> str | None:
    explicit = os.environ.get("CORAL_CHROMIUM")
    for path in ([explicit] if explicit else []) + list(BROWSERS):
        if path and Path(path).is_file() and os.access(path, os.X_OK):
            return path
    return shutil.which("chromium-headless-shell") or shutil.which("chromium")
