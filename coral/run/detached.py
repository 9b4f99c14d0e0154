"""Starting a run in the background: the one path behind `coral run --detach` and the
dashboard's Launch button.

The child is `python -m coral run CONFIG --run-id ID ...` (an argument list, never a shell string)
in its own session, so it outlives the process that started it. Its output goes to
runs/RUN_ID/orchestrator.log, whose progress lines the dashboard reads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from coral.config import REPO_ROOT
from coral.execution.jobs import BUILTIN_BODIES, JobBodies
from coral.home import Home
from coral.run.registry import ensure_new_run, read_json

ORCHESTRATOR_LOG = "orchestrator.log"


def run_command(config_path: Path | str, run_id: str, overrides: Sequence[str] = (),
                backend: str | None = None, workers: int | None = None,
                bodies: JobBodies = BUILTIN_BODIES, modal_double: str | None = None) -> list[str]:
    """The child's argument list; the job bodies and `modal_double` are test hooks passed on."""
    cmd = [sys.executable, "-m", "coral", "run", os.path.abspath(config_path), "--run-id", run_id]
    for text in overrides:
        cmd += ["--set", text]
    if backend:
        cmd += ["--backend", backend]
    if workers:
        cmd += ["--workers", str(workers)]
    cmd += bodies.cli_args()
    if modal_double:
        cmd += ["--modal-double", modal_double]
    return cmd


def start_detached(home: Home, run_id: str, command: list[str]) -> subprocess.Popen[bytes]:
    """Start `command` (from `run_command`) for a new run id; returns at once."""
    ensure_new_run(home, run_id)
    folder = home.ensure().run_dir(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ORCHESTRATOR_LOG, "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO_ROOT,
                                env={**os.environ, "CORAL_HOME": str(home.root)})


def log_tail(home: Home, run_id: str, lines: int = 20) -> list[str]:
    """The last lines of the run's orchestrator log ([] when there is none)."""
    path = home.run_dir(run_id) / ORCHESTRATOR_LOG
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return text.strip().splitlines()[-lines:]


def wait_registered(home: Home, run_id: str, proc: subprocess.Popen[bytes],
                    timeout: float = 120.0) -> str | None:
    """None once the child registered the run, else one line saying why it did not.

    Registered means status.json names the child's pid: another process that registered this run
    id first (two launches of one id) must not count as this child's success."""
    folder = home.run_dir(run_id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if read_json(folder / "status.json").get("pid") == proc.pid:
            return None
        if proc.poll() is not None:
            # Its error line, not merely the last line: a second launch of one id shares the log.
            tail = log_tail(home, run_id)
            line = next((t for t in reversed(tail) if t.startswith("coral: error:")), tail[-1] if tail else None)
            return f"run {run_id} exited before registering: {line or 'no output'}"
        time.sleep(0.1)
    return f"run {run_id} did not register within {timeout:.0f}s"
