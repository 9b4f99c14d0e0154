"""What the analysis notebooks share and no dashboard page needs: which home and runs a notebook
reads (from environment variables), and the one JSON line of key numbers tests read back.

CORAL_HOME picks the home (coral.home), CORAL_RUN_ID one run (default: the newest registered run,
the dashboard's default too), CORAL_RUN_IDS a comma-separated list (default: every run).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from coral import analysis
from coral.errors import CoralError
from coral.home import Home

RUN_ID_VAR = "CORAL_RUN_ID"
RUN_IDS_VAR = "CORAL_RUN_IDS"
KEY_NUMBERS_PREFIX = "KEY_NUMBERS "


def _registered(home: Home) -> list[str]:
    runs = analysis.list_runs(home)["run_id"].tolist()  # oldest first: ids sort by creation time
    if not runs:
        raise CoralError(f"no runs under {home.root}: start one with `coral run CONFIG` "
                         "or point CORAL_HOME at a home that has runs")
    return runs


def run_id_from_env(home: Home) -> str:
    """CORAL_RUN_ID, or the newest registered run."""
    runs = _registered(home)
    chosen = os.environ.get(RUN_ID_VAR, "").strip()
    if not chosen:
        return runs[-1]
    if chosen not in runs:
        raise CoralError(f"{RUN_ID_VAR}={chosen!r}: no such run under {home.root} (known: {', '.join(runs)})")
    return chosen


def run_ids_from_env(home: Home) -> list[str]:
    """CORAL_RUN_IDS (comma-separated, order kept), or every registered run, oldest first."""
    runs = _registered(home)
    raw = os.environ.get(RUN_IDS_VAR, "").strip()
    if not raw:
        return runs
    chosen = list(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    unknown = [r for r in chosen if r not in runs]
    if unknown:
        raise CoralError(f"{RUN_IDS_VAR}: no run {unknown[0]!r} under {home.root} (known: {', '.join(runs)})")
    return chosen


def plain(value: Any) -> Any:
    """numpy / pandas scalars as Python ones and NaN as None, so key numbers are strict JSON."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def key_numbers_line(numbers: dict[str, Any]) -> str:
    """The line a notebook's last cell prints; `parse_key_numbers` reads it back."""
    return KEY_NUMBERS_PREFIX + json.dumps(plain(numbers), sort_keys=True, allow_nan=False)


def parse_key_numbers(text: str) -> dict[str, Any]:
    lines = [line for line in text.splitlines() if line.startswith(KEY_NUMBERS_PREFIX)]
    if not lines:
        raise CoralError("no KEY_NUMBERS line in the notebook output")
    return json.loads(lines[-1][len(KEY_NUMBERS_PREFIX):])
