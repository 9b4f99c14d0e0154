"""Shared test setup: no Modal credentials leak in, every test gets its own CORAL_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_store_support import template_home  # noqa: F401 - a session fixture shared by store tests

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _restore_main_module():
    """Streamlit's AppTest leaves sys.modules['__main__'] set to the app script; a later
    multiprocessing 'spawn' child would then re-run the dashboard (and open the store)."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A fake or real token would make modal retry network calls for about a minute.
    for key in list(os.environ):
        if key.startswith("MODAL_"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("CORAL_HOME", str(tmp_path / "coral-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def run_coral(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
              cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real `coral` CLI in a child process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "coral", *args], capture_output=True, text=True,
        timeout=timeout, env=full_env, cwd=cwd or REPO,
    )
