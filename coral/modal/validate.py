"""`coral validate CONFIG` on every backend: the serial executor, local worker processes, and the
modal backend on the Modal double (coral/modal/offline.py), with one config, seed and torch
thread count. All three must produce identical events, scores and populations; otherwise the
report names the first event that differs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from coral.config import apply_overrides, read_yaml
from coral.errors import CoralError
from coral.execution.jobs import BUILTIN_BODIES, JobBodies
from coral.home import Home
from coral.modal.double import ModalDouble
from coral.modal.offline import deploy
from coral.run.events import read_events, science
from coral.run.lifecycle import RunResult, resolve_config, validate_config_runs
from coral.run.registry import compare_runs, runtime_comparison, without_runtime


def first_difference(home: Home, a: str, b: str) -> str | None:
    """'event SEQ (TYPE): FIELD differs' for the first event whose science differs, else None.
    The runtime objective is left out as compare_runs leaves it out (different meters)."""
    x = [science(e) for e in read_events(home.events_dir(a))]
    y = [science(e) for e in read_events(home.events_dir(b))]
    if runtime_comparison(home, a, b) is not None:
        x, y = without_runtime(x), without_runtime(y)
    for left, right in zip(x, y, strict=False):
        if left != right:
            keys = sorted(set(left["data"]) | set(right["data"]))
            field = next((k for k in keys if left["data"].get(k) != right["data"].get(k)),
                         "type" if left["type"] != right["type"] else "generation")
            return f"event {left['seq']} ({left['type']}): {field} differs"
    if len(x) != len(y):
        return f"{len(x)} events against {len(y)}"
    return None


def run_on_double(config_path: str | os.PathLike, overrides: list[str] | None, workers: int,
                  home: Home, run_id: str, bodies: JobBodies = BUILTIN_BODIES) -> RunResult:
    """One run of the config on the modal backend, on the Modal double: the app's `orchestrator`
    function runs it (its launcher, Volume commits and all), as `coral run` submits it to Modal;
    the run's folder is then copied from the double's Volume into `home`."""
    config = resolve_config(config_path, overrides, "modal", max(2, workers))
    path = Path(config_path).resolve()
    data = apply_overrides(read_yaml(path), [*(overrides or []), "backend.kind=modal",
                                             f"backend.workers={max(2, workers)}"])
    with tempfile.TemporaryDirectory(prefix="coral-validate-modal-") as volumes:
        api = ModalDouble(volume_root=Path(volumes))
        deploy(api, config, bodies=bodies, preload=not bodies.overridden, one_job_at_a_time=True,
               launcher_interval=0.2)
        out = api.Function.from_name(config.modal.app_name, "orchestrator").remote(
            yaml.safe_dump(data, sort_keys=False), str(path.parent), run_id)
        if "error" in out:
            raise CoralError(f"the modal side of validate failed: {out['error']}")
        shutil.copytree(Path(volumes) / config.modal.volume / "runs" / run_id,
                        home.run_dir(run_id))
    return RunResult(**out)


def validate_everywhere(config_path: str | os.PathLike, overrides: list[str] | None = None,
                        workers: int = 2, home: Home | None = None,
                        bodies: JobBodies = BUILTIN_BODIES,
                        progress: Callable[[str, dict], None] | None = None) -> dict[str, Any]:
    """The serial/local report of `validate_config_runs`, plus a `modal` side run on the double
    and, per side, whether it is identical to the serial run and where it first differs.
    `progress` gets each side's start ("validate") and its runs' progress calls."""
    home = (home or Home()).ensure()
    report = validate_config_runs(config_path, overrides, workers, home=home, bodies=bodies,
                                  progress=progress)
    serial = report["serial"]["run_id"]
    run_id = serial.removesuffix("-serial") + "-modal"
    if progress is not None:
        progress("validate", {"side": "modal", "run_id": run_id})
    result = run_on_double(config_path, overrides, workers, home, run_id, bodies)
    report["modal"] = {"run_id": run_id, "state": result.state,
                       "wall_seconds": result.wall_seconds, "retries": result.retries,
                       "lease_expiries": result.lease_expiries}
    notes: list[str] = []
    report["identical_to_serial"] = {
        "queue": report["identical"],
        "modal": compare_runs(home, serial, run_id, notes),
    }
    report["runtime_left_out"]["modal"] = notes[0] if notes else None
    report["first_difference"] = {
        side: first_difference(home, serial, report[side]["run_id"]) for side in ("queue", "modal")
    }
    return report
