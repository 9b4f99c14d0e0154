"""`coral modal cost RUN` reports idle GPU time from what the worker calls recorded (issue 28
item 2), not only a bound from the config: each GPU worker call writes its busy and idle
seconds into the run's folder on the Volume when it exits. On the Modal double with the app's
real container bodies and stand-in job bodies."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from coral.config import REPO_ROOT, load_config
from coral.errors import CoralError
from coral.execution.jobs import JobBodies
from coral.home import Home
from coral.modal.costs import recorded_calls
from coral.modal.double import ModalDouble
from coral.modal.launcher import _shipped
from coral.modal.offline import deploy, local_path
from coral.modal.runtime import orchestrate
from coral.run.events import read_events

APP = "coral"
VOLUME = "coral-home"
SMOKE = REPO_ROOT / "configs" / "smoke.yaml"
FAKES = "coral.testing.fakes:HANDLERS"
IDLE = 2  # modal.idle_seconds: a worker call exits after this long without a job


def test_worker_calls_record_busy_and_idle_seconds_and_cost_reports_them(tmp_path: Path) -> None:
    api = ModalDouble(volume_root=tmp_path / "volumes")
    deploy(api, load_config(SMOKE, ["backend.kind=modal"]), bodies=JobBodies(FAKES), preload=False,
           network_blocked=True, scaledown_window=0.5)

    def orchestrator(config_yaml: str, config_dir: str, run_id: str) -> dict[str, Any]:
        return orchestrate(config_yaml, local_path(config_dir), run_id, volume_name=VOLUME, api=api,
                           home=Home(api.Volume.from_name(VOLUME).path), bodies=JobBodies(FAKES),
                           model_paths="local")

    api.deployed.register(APP, "orchestrator", orchestrator, volumes=(VOLUME,))
    data, _, config_dir = _shipped(SMOKE, [f"modal.idle_seconds={IDLE}"])
    started = time.monotonic()
    out = api.Function.from_name(APP, "orchestrator").spawn(
        yaml.safe_dump(data, sort_keys=False), config_dir, "costly").get(timeout=180)
    assert out["state"] == "finished"
    home = Home(tmp_path / "volumes" / VOLUME)
    run_dir = home.run_dir("costly")
    deadline = time.monotonic() + 60
    while set(recorded_calls(run_dir)) < {"train", "generate"}:  # calls exit IDLE s after their last job
        assert time.monotonic() < deadline, "worker calls did not record their accounting"
        time.sleep(0.2)
    time.sleep(IDLE + 1)  # the last calls to go idle
    wall = time.monotonic() - started
    calls = recorded_calls(run_dir)
    for stage in ("train", "generate"):
        row = calls[stage]
        assert row["calls"] >= 1 and row["jobs"] >= 1
        assert 0 < row["busy_seconds"] < wall
        # Each call idled at least IDLE seconds before exiting, plus the scaledown window.
        assert row["idle_seconds"] >= row["calls"] * IDLE
    # Every job a call ran is counted: as many as the run's generate jobs.
    generate_jobs = {(e.generation, e.data["genome"]) for e in read_events(home.events_dir("costly"))
                     if e.type == "job_finished" and "generate" in e.data["timings"]}
    assert calls["generate"]["jobs"] == len(generate_jobs)

    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update(CORAL_HOME=str(home.root), PYTHONPATH=str(REPO_ROOT))
    shown = subprocess.run([sys.executable, "-m", "coral", "modal", "cost", "costly"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "GPU-s idle (recorded;" in shown.stdout and "at most" not in shown.stdout
    for stage in ("train", "generate"):
        assert f"{stage} on " in shown.stdout and f"{calls[stage]['idle_seconds']:.1f} GPU-s idle" in shown.stdout


def test_an_unreadable_call_record_is_one_line_naming_the_file(tmp_path: Path) -> None:
    calls = tmp_path / "runs" / "r" / "calls"
    calls.mkdir(parents=True)
    (calls / "modal_fc-1.json").write_text('{"worker": "modal:fc-1", "group": "train"}')
    with pytest.raises(CoralError) as err:
        recorded_calls(tmp_path / "runs" / "r")
    message = str(err.value)
    assert "\n" not in message and "modal_fc-1.json" in message and "unreadable" in message
