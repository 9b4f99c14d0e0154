"""Modal's first real run (issue 28), on the Modal double with the real container bodies:
preemption, hardening and what a review of the modal 1.6.4 SDK says Modal really does."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from coral.config import REPO_ROOT, load_config
from coral.execution.transport.modal_backend import ModalTransport
from coral.home import Home
from coral.modal.double import ModalDouble
from coral.modal.launcher import _shipped
from coral.modal.offline import deploy, local_path
from coral.modal.runtime import orchestrate
from coral.run.control import CONTROL_DICT, control_key, set_hold
from coral.run.events import read_events
from coral.run.registry import compare_runs

APP = "coral"
VOLUME = "coral-home"
SMOKE = REPO_ROOT / "configs" / "smoke.yaml"
FAKES = "coral.testing.fakes:HANDLERS"


def smoke_on_double(tmp_path: Path, after_generation_0: Callable[[str, ModalDouble], None]) -> ModalDouble:
    """The app on a double with fake job bodies; its orchestrator calls `after_generation_0`
    (run id, api) once generation 0's checkpoint is committed, in runs named 'hit-*'."""
    api = ModalDouble(volume_root=tmp_path / "volumes")
    config = load_config(SMOKE, ["backend.kind=modal"])
    deploy(api, config, handlers=FAKES, preload=False, network_blocked=True, scaledown_window=0.5)
    done: set[str] = set()

    def orchestrator(config_yaml: str, config_dir: str, run_id: str) -> dict[str, Any]:
        def progress(kind: str, info: dict) -> None:
            if (kind == "generation" and info["generation"] == 0 and run_id.startswith("hit-")
                    and run_id not in done):
                done.add(run_id)
                after_generation_0(run_id, api)

        return orchestrate(config_yaml, local_path(config_dir), run_id, volume_name=VOLUME, api=api,
                           home=Home(api.Volume.from_name(VOLUME).path), handlers=FAKES,
                           progress=progress, model_paths="local")

    api.deployed.register(APP, "orchestrator", orchestrator, volumes=(VOLUME,))
    return api


def shipped_smoke() -> tuple[str, str]:
    data, _, config_dir = _shipped(SMOKE, [])
    return yaml.safe_dump(data, sort_keys=False), config_dir


def preempt(run_id: str, api: ModalDouble) -> None:
    os.kill(os.getpid(), signal.SIGINT)  # what Modal sends a container it preempts


def user_stop(run_id: str, api: ModalDouble) -> None:
    transport = ModalTransport(APP, api=api)  # what `coral stop RUN` puts
    set_hold(transport, run_id, "stop")
    transport.dict(CONTROL_DICT).put(control_key(run_id), {"request": "stop"})


def test_a_preempted_orchestrator_is_started_again_and_resumes_to_an_identical_run(
    tmp_path: Path,
) -> None:
    api = smoke_on_double(tmp_path, preempt)
    text, config_dir = shipped_smoke()
    orchestrator = api.Function.from_name(APP, "orchestrator")
    reference = orchestrator.spawn(text, config_dir, "ref").get(timeout=180)
    assert reference["state"] == "finished"
    # The first container runs in this (the main) thread, where SIGINT lands, as on Modal.
    call = orchestrator.spawn_here(text, config_dir, "hit-preempted")
    result = call.get(timeout=180)
    assert call.restarts == 1  # no output: Modal started the input again
    assert result["state"] == "finished"
    folder = tmp_path / "volumes" / VOLUME / "runs" / "hit-preempted"
    record = json.loads((folder / "modal.json").read_text())
    assert [c["resumed"] for c in record["calls"]] == [False, True]
    events = list(read_events(folder / "events"))
    assert [e.generation for e in events if e.type == "generation_finished"] == [0, 1]
    assert not [e for e in events if e.type == "run_stopped"]
    home = Home(tmp_path / "volumes" / VOLUME)
    assert compare_runs(home, "ref", "hit-preempted") == {
        "populations": True, "scores": True, "event_ids": True, "events": True}


def test_a_users_stop_still_stops_the_run(tmp_path: Path) -> None:
    api = smoke_on_double(tmp_path, user_stop)
    text, config_dir = shipped_smoke()
    call = api.Function.from_name(APP, "orchestrator").spawn_here(text, config_dir, "hit-stop")
    assert call.get(timeout=180)["state"] == "stopped"
    assert call.restarts == 0
    events = list(read_events(tmp_path / "volumes" / VOLUME / "runs" / "hit-stop" / "events"))
    assert [e.data["reason"] for e in events if e.type == "run_stopped"] == ["stop requested"]
