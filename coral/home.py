"""CORAL_HOME: where everything a run produces lives, and the run-id scheme.

Layout (docs/architecture.md, "Home"):
    runs/RUN_ID/config.yaml, runs/RUN_ID/events/, runs/RUN_ID/checkpoints/
    adapters/CACHE_KEY/, queue.sqlite, store.duckdb
"""

from __future__ import annotations

import os
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path

from coral.errors import CoralError

ENV_VAR = "CORAL_HOME"
RUN_ID_PATTERN = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6,12}$|^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def coral_home() -> Path:
    """CORAL_HOME if set, else ./.coral in the working directory (as MLflow's ./mlruns)."""
    raw = os.environ.get(ENV_VAR)
    return Path(raw).expanduser().resolve() if raw else (Path.cwd() / ".coral").resolve()


class Home:
    """The folder layout under one CORAL_HOME. Creating a Home creates nothing on disk."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).resolve() if root is not None else coral_home()

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def run_dir(self, run_id: str) -> Path:
        check_run_id(run_id)
        return self.runs / run_id

    def run_config(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "config.yaml"

    def events_dir(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "events"

    def checkpoints_dir(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "checkpoints"

    @property
    def adapters(self) -> Path:
        return self.root / "adapters"

    def adapter_dir(self, cache_key: str) -> Path:
        return self.adapters / cache_key

    @property
    def queue_db(self) -> Path:
        return self.root / "queue.sqlite"

    @property
    def store_db(self) -> Path:
        return self.root / "store.duckdb"

    def ensure(self) -> Home:
        for path in (self.runs, self.adapters):
            path.mkdir(parents=True, exist_ok=True)
        return self


def new_run_id(now: datetime | None = None) -> str:
    """Time-sortable (UTC second, lexicographic order = time order) and unique (random suffix).

    The random suffix names the run; it never feeds any random stream of the science.
    """
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    # 48 random bits: 2,000 ids in one second collide with probability ~7e-9 (24 bits gave ~11%).
    return f"{stamp}-{secrets.token_hex(6)}"


def is_run_id(name: str) -> bool:
    """Whether `name` is a valid run id. fullmatch, not match: `$` also matches before a
    trailing newline, which let "run\n" through."""
    return RUN_ID_PATTERN.fullmatch(name) is not None


def check_run_id(run_id: str) -> str:
    """Run ids become folder names and queue partitions: allow only a safe alphabet."""
    if not isinstance(run_id, str) or not is_run_id(run_id):
        raise CoralError(
            f"invalid run id {run_id!r}: use letters, digits, '.', '_' or '-' (at most 64)"
        )
    return run_id
