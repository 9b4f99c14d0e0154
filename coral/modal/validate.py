"""`coral validate CONFIG` on every backend: the serial executor, local worker processes, and the
modal backend on the Modal double (coral/modal/offline.py), with one config, seed and torch
thread count. All three must produce identical events, scores and populations; otherwise the
report names the first event that differs.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from coral.config import Config
from coral.execution.transport.base import Transport
from coral.execution.transport.modal_backend import ModalTransport
from coral.home import Home
from coral.modal.double import ModalDouble
from coral.modal.launcher import ModalLauncher
from coral.modal.offline import deploy
from coral.run.engine import default_threads
from coral.run.events import read_events, science
from coral.run.lifecycle import (
    RunResult,
    resolve_config,
    run_from_config,
    validate_config_runs,
)
from coral.run.registry import compare_runs


def first_difference(home: Home, a: str, b: str) -> str | None:
    """'event SEQ (TYPE): FIELD differs' for the first event whose science differs, else None."""
    x = [science(e) for e in read_events(home.events_dir(a))]
    y = [science(e) for e in read_events(home.events_dir(b))]
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
                  home: Home, run_id: str, handlers: str | None = None) -> RunResult:
    """One run of the config on the modal backend, on the Modal double (a temporary Volume)."""
    config = resolve_config(config_path, overrides, "modal", max(2, workers))
    with tempfile.TemporaryDirectory(prefix="coral-validate-modal-") as volumes:
        api = ModalDouble(volume_root=Path(volumes))
        deploy(api, config, handlers=handlers, preload=handlers is None, one_job_at_a_time=True)
        transport = ModalTransport(config.modal.app_name, api=api)

        def launcher(_run_transport: Transport, config: Config) -> ModalLauncher:
            # The run hands back the transport it was given: `transport`, a ModalTransport.
            return ModalLauncher(transport, config, kinds=["train", "generate", "test"],
                                 run_id=run_id, model_paths="local", interval=0.2)

        return run_from_config(config, run_id, home=home, handlers=handlers,
                               threads=default_threads(workers), launcher=launcher,
                               transport=transport)


def validate_everywhere(config_path: str | os.PathLike, overrides: list[str] | None = None,
                        workers: int = 2, home: Home | None = None,
                        handlers: str | None = None) -> dict[str, Any]:
    """The serial/local report of `validate_config_runs`, plus a `modal` side run on the double
    and, per side, whether it is identical to the serial run and where it first differs."""
    home = (home or Home()).ensure()
    report = validate_config_runs(config_path, overrides, workers, home=home, handlers=handlers)
    serial = report["serial"]["run_id"]
    run_id = serial.removesuffix("-serial") + "-modal"
    result = run_on_double(config_path, overrides, workers, home, run_id, handlers)
    report["modal"] = {"run_id": run_id, "state": result.state,
                       "wall_seconds": result.wall_seconds, "retries": result.retries,
                       "lease_expiries": result.lease_expiries}
    report["identical_to_serial"] = {
        "queue": report["identical"],
        "modal": compare_runs(home, serial, run_id),
    }
    report["first_difference"] = {
        side: first_difference(home, serial, report[side]["run_id"]) for side in ("queue", "modal")
    }
    return report
