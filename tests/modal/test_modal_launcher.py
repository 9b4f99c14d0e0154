"""The Modal launcher and the container bodies, against the Modal double (threads as
containers): scaling with queue depth up to max_containers, idle exit, Volume sync, the
generation worker's preloaded model, and a whole run submitted to the orchestrator."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from coral.config import REPO_ROOT, BackendConfig, Config, ModalConfig, ModelConfig, load_config
from coral.errors import ConfigError, CoralError
from coral.execution.executor import QueueExecutor
from coral.execution.jobs import job_queue
from coral.execution.messages import Job, encode
from coral.execution.transport.local import LocalTransport
from coral.execution.transport.modal_backend import ModalTransport
from coral.hashing import content_hash
from coral.home import Home
from coral.modal.launcher import ModalLauncher, container_model_json, submit_run
from coral.modal.runtime import GenerateContainer, orchestrate, serve
from coral.run.backend import RunContext
from coral.testing.modal_double import ModalDouble

APP = "coral"


def wait_for(what: Callable[[], Any], label: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := what()):
        assert time.monotonic() < deadline, f"timed out waiting for {label}"
        time.sleep(0.02)
    return value


def setup(max_containers: int, gate: threading.Event | None = None) -> tuple[ModalDouble,
                                                                            ModalTransport,
                                                                            Config]:
    api = ModalDouble()
    config = Config(modal=ModalConfig(max_containers_test=max_containers, idle_seconds=2),
                    backend=BackendConfig(lease_seconds=2.0))

    def test_worker(idle_seconds: float, lease_seconds: float) -> dict[str, int]:
        if gate is not None:
            gate.wait(30)  # a cold start
        return serve(("test", "echo"), app_name=APP, idle_seconds=idle_seconds,
                     lease_seconds=lease_seconds, api=api)

    api.deployed.register(APP, "test_worker", test_worker, max_containers=max_containers)
    return api, ModalTransport(APP, api=api), config


def test_workers_follow_queue_depth_up_to_the_cap_then_exit_when_idle() -> None:
    api, transport, config = setup(max_containers=3)
    executor = QueueExecutor(transport, "run-scale", config.backend)
    future = executor.submit_batch("echo", {f"j{i}": {"sleep_s": 0.05, "i": i} for i in range(12)})
    launcher = ModalLauncher(transport, config, kinds=["echo"])
    assert [g.name for g in launcher.groups] == ["test"]
    assert launcher.scale() == {"test": 3}  # 12 waiting, at most 3 containers
    assert launcher.scale() == {"test": 0}
    results = future.result(timeout=60)
    assert [r.output["i"] for r in results] == list(range(12)) and all(r.ok for r in results)
    calls = {c.object_id for c in api.deployed.functions[(APP, "test_worker")].calls}
    assert {r.worker for r in results} <= {f"modal:{c}" for c in calls}
    wait_for(lambda: launcher.alive() == 0, "idle workers to exit")
    assert api.deployed.functions[(APP, "test_worker")].pool.peak == 3
    assert launcher.scale() == {"test": 0}  # nothing waits: nothing starts


def test_starting_workers_are_not_spawned_again_for_the_same_jobs() -> None:
    gate = threading.Event()
    api, transport, config = setup(max_containers=4, gate=gate)
    executor = QueueExecutor(transport, "run-cold", config.backend)
    first = executor.submit_batch("echo", {"a": {}, "b": {}})
    launcher = ModalLauncher(transport, config, kinds=["echo", "test"])
    assert launcher.scale() == {"test": 2}
    assert launcher.scale() == {"test": 0}  # two cold-starting calls cover the two jobs
    second = executor.submit_batch("echo", {"c": {}, "d": {}, "e": {}})
    assert launcher.scale() == {"test": 2}  # 5 waiting, 2 starting, cap 4
    assert launcher.alive() == 4
    gate.set()
    assert all(r.ok for r in first.result(timeout=60) + second.result(timeout=60))


def test_the_background_loop_scales_and_stop_ends_it() -> None:
    api, transport, config = setup(max_containers=2)
    launcher = ModalLauncher(transport, config, kinds=["echo"], interval=0.05)
    executor = QueueExecutor(transport, "run-loop", config.backend)
    with launcher:
        results = executor.submit_batch("echo", {f"j{i}": {} for i in range(4)}).result(60)
    assert all(r.ok for r in results)
    spawned = launcher.spawned
    transport.queue(job_queue("echo")).put(encode(Job(job_id="x", run_id="r", kind="echo")))
    time.sleep(0.2)
    assert launcher.spawned == spawned  # stopped: no more spawns


def test_generation_workers_are_built_for_the_runs_model() -> None:
    api = ModalDouble()
    built: list[str] = []

    class GenerateWorker:
        def __init__(self, model: str) -> None:
            built.append(model)

        def serve(self, idle_seconds: float, lease_seconds: float) -> dict[str, int]:
            return {}

    api.deployed.register_cls(APP, "GenerateWorker", GenerateWorker)
    transport = ModalTransport(APP, api=api)
    config = Config(model=ModelConfig(name="codellama/CodeLlama-7b-hf", dtype="bfloat16"))
    transport.queue(job_queue("generate")).put(encode(Job(job_id="g", run_id="r",
                                                          kind="generate")))
    launcher = ModalLauncher(transport, config, kinds=["generate"])
    assert launcher.scale() == {"generate": 1}
    wait_for(lambda: built, "the worker instance")
    assert json.loads(built[0]) == config.model.model_dump(mode="json")


def test_local_model_paths_become_container_paths() -> None:
    inside = ModelConfig(name=str(REPO_ROOT / "data" / "models" / "tiny-code"))
    assert json.loads(container_model_json(inside))["name"] == "/root/data/models/tiny-code"
    with pytest.raises(ConfigError, match="visible on Modal"):
        container_model_json(ModelConfig(name="/opt/elsewhere/model"))
    with pytest.raises(ConfigError, match="reloads"):  # CORAL_HOME: the adapters' Volume
        container_model_json(ModelConfig(name=str(Home().root / "models" / "mine")))


def test_the_launcher_needs_the_modal_transport(tmp_path: Path) -> None:
    with pytest.raises(CoralError, match="needs the modal transport"):
        ModalLauncher(LocalTransport(tmp_path / "q.sqlite"), Config())


# ------------------------------------------------------------------ container bodies

_PRELOADS: list[str] = []


def probe(job: Job, ctx: Any) -> dict[str, Any]:
    """Reports whether the base model this job would use was already loaded."""
    model = ModelConfig.model_validate(job.payload["model"])
    return {"base": ctx.resource(f"base:{content_hash(model)}", lambda: "loaded late")}


HANDLERS = {"generate": probe}


def test_a_container_preloads_its_model_and_syncs_the_volume_around_jobs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def fake_base(ctx: Any, model: ModelConfig) -> Any:
        _PRELOADS.append(model.name)
        return ctx.resource(f"base:{content_hash(model)}", lambda: "loaded at enter")

    monkeypatch.setattr("coral.modal.runtime._base", fake_base)
    (tmp_path / "vol").mkdir()
    (tmp_path / "models").mkdir()
    api = ModalDouble(volume_root=tmp_path)
    model = ModelConfig(name="some/model")

    def enter(model: str) -> GenerateContainer:
        return GenerateContainer(model, app_name=APP, volume_name="vol", api=api,
                                 handlers="test_modal_launcher:HANDLERS",
                                 models_volume_name="models")

    api.deployed.register_cls(APP, "GenerateWorker", enter, volumes=("vol", "models"))
    volume, models = api.Volume.from_name("vol"), api.Volume.from_name("models")
    queue = ModalTransport(APP, api=api).queue(job_queue("generate"))
    for i in range(3):
        queue.put(encode(Job(job_id=f"g{i}", run_id="run-v", kind="generate",
                             payload={"model": model.model_dump(mode="json")})),
                  partition="run-v")
    worker = api.Cls.from_name(APP, "GenerateWorker")(model=model.model_dump_json())
    stats = worker.serve.remote(0.3, 1.0, "run-v")
    assert stats["done"] == 3 and stats["failed"] == 0
    assert _PRELOADS == ["some/model"]
    # One of each per job, and one commit of the call's accounting (busy/idle seconds) at exit.
    assert (volume.reloads, volume.commits) == (3, 4)
    # Never reloaded (the loaded model is mapped) nor committed (a commit reloads): the
    # orchestrator downloaded and committed the model before this container started.
    assert (models.reloads, models.commits) == (0, 0)
    results = ModalTransport(APP, api=api).queue("results").get_many(10, partition="run-v")
    assert [json.loads(r)["output"]["base"] for r in results] == ["loaded at enter"] * 3
    again = worker.serve.remote(0.3, 1.0, "run-v")  # the warm container: no second load
    assert again["done"] == 0 and _PRELOADS == ["some/model"]


def test_a_whole_run_goes_to_the_orchestrator(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    api = ModalDouble(volume_root=tmp_path)
    (tmp_path / "coral-home").mkdir()
    sent: list[tuple[str, str, str]] = []
    api.deployed.register(APP, "orchestrator", lambda *args: sent.append(args) or "started")
    run_id, call_id = submit_run(REPO_ROOT / "configs" / "local.yaml", ["generations=1", "evolution.final_rounds=0"],
                                 api=api)
    assert call_id.startswith("fc-")
    wait_for(lambda: sent, "the orchestrator call")
    config_yaml, config_dir, sent_run = sent[0]
    assert (config_dir, sent_run) == ("/root/configs", run_id)
    data = yaml.safe_load(config_yaml)
    assert data["generations"] == 1 and data["backend"]["kind"] == "modal"
    outside = tmp_path / "c.yaml"
    outside.write_text("generations: 1\n")
    with pytest.raises(ConfigError, match="inside the CORAL checkout"):
        submit_run(outside, api=api)

    @dataclasses.dataclass
    class Result:
        run_id: str
        state: str

    seen: list[Any] = []

    def fake_run(config: Config, run_id: str, context: RunContext) -> Result:
        seen.append(config)
        return Result(run_id, "finished")

    monkeypatch.setattr("coral.modal.runtime.run_from_config", fake_run)
    # In the container the checkout is /root; here REPO_ROOT plays it.
    api.deployed.register(APP, "orchestrate", lambda *args: orchestrate(
        *args, volume_name="coral-home", api=api,
        home=Home(api.Volume.from_name("coral-home").path)), volumes=("coral-home",))
    out = api.Function.from_name(APP, "orchestrate").remote(
        config_yaml, str(REPO_ROOT / "configs"), run_id)
    assert out == {"run_id": run_id, "state": "finished"}
    laptop = load_config(REPO_ROOT / "configs" / "local.yaml")
    assert seen[0].benchmark.root == laptop.benchmark.root  # resolved as on the laptop
    volume = api.Volume.from_name("coral-home")
    assert (volume.reloads, volume.commits) == (1, 2)  # the orchestrator record, the end
    record = json.loads((tmp_path / "coral-home" / "runs" / run_id / "modal.json").read_text())
    assert [c["resumed"] for c in record["calls"]] == [False]
