"""A Modal run that works the first time: the faults of issue 21 ("#18"), each reproduced against
the Modal double with Modal's real semantics (a Volume view per container, @enter once per
container without a call id, per-run queue partitions) and the real container bodies."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coral.config import REPO_ROOT as REPO
from coral.config import BackendConfig, Config, ModalConfig, ModelConfig, load_config
from coral.errors import AdapterError, CoralError
from coral.execution.executor import QueueExecutor
from coral.execution.jobs import LEASES_DICT, JobBodies, WorkerContext, job_queue
from coral.execution.messages import Job
from coral.execution.transport.modal_backend import ModalTransport
from coral.home import Home
from coral.modal.backend import ModalBackend
from coral.modal.double import ModalDouble
from coral.modal.launcher import (
    ModalLauncher,
    modal_run_status,
    resume_on_modal,
    status,
    submit_run,
)
from coral.modal.offline import deploy, local_path
from coral.modal.runtime import GenerateContainer, TrainContainer, orchestrate
from coral.run.backend import RunContext
from coral.run.events import read_events
from coral.run.lifecycle import resume_run

APP = "coral"
VOLUME = "coral-home"
TRAINED: list[str] = []  # one entry per training actually done (this process: the double's)


def wait_for(what: Callable[[], Any], label: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := what()):
        assert time.monotonic() < deadline, f"timed out waiting for {label}"
        time.sleep(0.02)
    return value


def train_adapter_like(job: Job, ctx: WorkerContext) -> dict[str, Any]:
    """The shape of coral.execution.job_bodies.train: claim the key, train into CORAL_HOME's
    adapter folder (aside, then rename), and trust the folder, not the claim, afterwards."""
    key = job.payload["key"]
    folder = ctx.home.adapter_dir(key)
    with ctx.claim(key, ttl=2.0, is_done=lambda: (folder / "adapter.json").exists()) as won:
        if won:
            TRAINED.append(job.job_id)
            time.sleep(float(job.payload.get("train_s", 0.6)))
            tmp = folder.with_name(folder.name + ".tmp")
            tmp.mkdir(parents=True)
            (tmp / "adapter.json").write_text("{}")
            os.rename(tmp, folder)
    if not (folder / "adapter.json").exists():
        raise AdapterError(f"adapter {key}: claim finished but {folder} is missing")
    return {"won": won}


HANDLERS = {"train": train_adapter_like}


def deploy_train(api: ModalDouble, max_containers: int = 2) -> None:
    """The app's TrainWorker class on the double: @enter builds the container's body once."""

    def enter(model: str) -> TrainContainer:
        home = Home(api.Volume.from_name(VOLUME).path)  # this container's mount of the Volume
        return TrainContainer(model, app_name=APP, volume_name=VOLUME, api=api, home=home,
                              handlers="test_modal_first_time:HANDLERS", preload=False)

    api.deployed.register_cls(APP, "TrainWorker", enter, max_containers=max_containers,
                              volumes=(VOLUME,), scaledown_window=1.0)


# ------------------------------------------------------------------ 1: identical genes train once


def test_identical_heavy_genes_on_two_containers_train_once(tmp_path: Path) -> None:
    api = ModalDouble(volume_root=tmp_path)
    api.Volume.from_name(VOLUME, create_if_missing=True).hydrate()
    deploy_train(api)
    transport = ModalTransport(APP, api=api)
    config = Config(modal=ModalConfig(max_containers=2, idle_seconds=2),
                    backend=BackendConfig(lease_seconds=2.0))
    TRAINED.clear()
    executor = QueueExecutor(transport, "run-same", config.backend)
    with ModalLauncher(transport, config, kinds=["train"], interval=0.05):
        results = executor.submit_batch("train", {"a": {"key": "k1"}, "b": {"key": "k1"}}).result(60)
    assert all(r.ok for r in results), [r.error for r in results]
    assert len({r.worker for r in results}) == 2  # both containers took one
    assert TRAINED == ["a"] or TRAINED == ["b"]  # and one of them trained
    assert sorted(r.output["won"] for r in results) == [False, True]
    assert (tmp_path / VOLUME / "adapters" / "k1" / "adapter.json").exists()  # committed


# ------------------------------------------------------------------ 3: generate workers scale


def test_generate_workers_own_their_leases_so_the_launcher_scales(tmp_path: Path) -> None:
    api = ModalDouble(volume_root=tmp_path)
    api.Volume.from_name(VOLUME, create_if_missing=True).hydrate()
    gate = threading.Event()

    def slow_generate(job: Job, ctx: WorkerContext) -> dict[str, Any]:
        gate.wait(30)
        return {}

    class Generate(GenerateContainer):  # the app's class body, with a stand-in model load
        def __init__(self, model: str) -> None:
            super().__init__(model, app_name=APP, volume_name=VOLUME, api=api,
                             home=Home(api.Volume.from_name(VOLUME).path),
                             handlers={"generate": slow_generate}, preload=False)

    api.deployed.register_cls(APP, "GenerateWorker", Generate, max_containers=4,
                              volumes=(VOLUME,), scaledown_window=1.0)
    transport = ModalTransport(APP, api=api)
    config = Config(model=ModelConfig(name="some/model"),
                    modal=ModalConfig(max_containers=4, idle_seconds=2),
                    backend=BackendConfig(lease_seconds=2.0))
    executor = QueueExecutor(transport, "run-gen", config.backend, job_partition="run-gen")
    launcher = ModalLauncher(transport, config, kinds=["generate"], run_id="run-gen")
    first = executor.submit_batch("generate", {"g0": {}})
    assert launcher.scale() == {"generate": 1}
    lease = wait_for(lambda: [v for _, v in transport.dict(LEASES_DICT).items()], "a lease")[0]
    calls = api.deployed.classes[(APP, "GenerateWorker")].calls
    assert lease["owner"] == f"modal:{calls[0].object_id}"  # the call id, not the host name
    second = executor.submit_batch("generate", {"g1": {}, "g2": {}})
    assert launcher.scale() == {"generate": 2}  # the first call works: it covers no new job
    api.deployed.register(APP, "test_worker", lambda *a: {})  # status reads its stats
    shown = {c["worker"]: c for c in status(config, api=api)["containers"]}
    assert shown[lease["owner"]]["busy"] and shown[lease["owner"]]["run"] == "run-gen"
    gate.set()
    assert all(r.ok for r in first.result(60) + second.result(60))


# ------------------------------------------------------------------ 7: runs do not interfere


def test_runs_sharing_the_queues_never_see_each_others_jobs(tmp_path: Path) -> None:
    api = ModalDouble(volume_root=tmp_path)
    api.Volume.from_name(VOLUME, create_if_missing=True).hydrate()
    deploy_train(api, max_containers=4)
    transport = ModalTransport(APP, api=api)
    config = Config(modal=ModalConfig(max_containers=4, idle_seconds=2),
                    backend=BackendConfig(lease_seconds=1.0))
    other = QueueExecutor(transport, "run-other", config.backend, job_partition="run-other")
    other.submit_batch("train", {f"o{i}": {"key": f"o{i}"} for i in range(5)})  # nobody serves it
    mine = QueueExecutor(transport, "run-mine", config.backend, job_partition="run-mine")
    launcher = ModalLauncher(transport, config, kinds=["train"], run_id="run-mine")
    assert launcher.scale() == {"train": 0}  # another run's waiting jobs start nothing here
    future = mine.submit_batch("train", {"m0": {"key": "m0", "train_s": 0.0}})
    # A worker takes the job and dies before leasing it: lost-job recovery must not wait for
    # the other run's jobs to leave the shared queue.
    taken = transport.queue(job_queue("train")).get(block=False, partition="run-mine")
    assert taken is not None and '"m0"' in taken
    assert launcher.scale() == {"train": 0}  # nothing of mine waits
    with launcher:
        results = future.result(timeout=30)
    assert results[0].ok and results[0].attempt == 1 and mine.stats.lease_expiries == 1
    assert transport.queue(job_queue("train")).len(partition="run-other") == 5  # untouched


# ------------------------------------------------------------------ 4: start failures end the run


def test_a_worker_that_crashes_at_start_fails_the_run_with_its_error(tmp_path: Path) -> None:
    api = ModalDouble(volume_root=tmp_path)

    class Gated:
        def __init__(self, model: str) -> None:
            raise PermissionError("401 Client Error: gated repo meta-llama/x, no HF_TOKEN")

        def serve(self, *args: Any) -> dict[str, int]:
            return {}

    api.deployed.register_cls(APP, "GenerateWorker", Gated, max_containers=2, scaledown_window=1.0)
    transport = ModalTransport(APP, api=api)
    config = Config(model=ModelConfig(name="meta-llama/x"),
                    modal=ModalConfig(max_containers=2, idle_seconds=2, max_start_failures=3),
                    backend=BackendConfig(lease_seconds=1.0))
    executor = QueueExecutor(transport, "run-gated", config.backend, job_partition="run-gated")
    launcher = ModalLauncher(transport, config, kinds=["generate"], run_id="run-gated",
                             interval=0.02, backoff=0.05)
    executor.add_health_check(launcher.check)
    future = executor.submit_batch("generate", {"g": {}})
    with launcher, pytest.raises(CoralError, match="gated repo meta-llama/x") as failed:
        future.result(timeout=30)
    assert "generate workers failed to start 3 times" in str(failed.value)
    assert launcher.spawned == 3  # bounded: no respawn every 2 s forever
    assert len(str(failed.value).splitlines()) == 1


# ------------------------------------------------------------------ 5: a Modal run resumes


class Crash(BaseException):
    """The orchestrator's container dying: nothing in the orchestrator handles it."""


def test_a_crashed_modal_run_resumes_in_the_cloud(tmp_path: Path) -> None:
    fakes = "coral.testing.fakes:HANDLERS"
    api = ModalDouble(volume_root=tmp_path / "volumes")
    config = load_config(REPO / "configs" / "smoke.yaml", ["backend.kind=modal"])
    deploy(api, config, bodies=JobBodies(fakes), preload=False, network_blocked=True,
           scaledown_window=0.5)
    crashed: list[int] = []

    def crash_once(kind: str, info: dict) -> None:
        if kind == "generation" and not crashed:
            crashed.append(info["generation"])
            raise Crash

    def orchestrator(config_yaml: str, config_dir: str, run_id: str) -> dict[str, Any]:
        return orchestrate(config_yaml, local_path(config_dir), run_id, volume_name=VOLUME, api=api,
                           home=Home(api.Volume.from_name(VOLUME).path), bodies=JobBodies(fakes),
                           progress=crash_once, model_paths="local")

    api.deployed.register(APP, "orchestrator", orchestrator, volumes=(VOLUME,))
    laptop = Home(tmp_path / "laptop")
    run_id, first = submit_run(REPO / "configs" / "smoke.yaml", [], api=api, home=laptop)
    with pytest.raises(Crash):
        api.FunctionCall.from_id(first).get(timeout=120)
    assert crashed == [0]
    assert modal_run_status(run_id, api=api, home=laptop)["state"] == "running"  # as it died
    with pytest.raises(CoralError, match="no run"):
        resume_run(run_id, RunContext(ModalBackend(api), laptop))  # the laptop has no copy: the run is on the Volume
    second = resume_on_modal(run_id, api=api, home=laptop)
    assert api.FunctionCall.from_id(second).get(timeout=120)["state"] == "finished"
    status = modal_run_status(run_id, api=api, home=laptop)
    assert status["state"] == "finished" and status["orchestrator_calls"] == [first, second]
    folder = tmp_path / "volumes" / VOLUME / "runs" / run_id
    record = json.loads((folder / "modal.json").read_text())
    assert [c["resumed"] for c in record["calls"]] == [False, True]
    finished = [e.generation for e in read_events(folder / "events")
                if e.type == "generation_finished"]
    assert finished == [0, 1]  # generation 0 once (from its checkpoint), then generation 1
    with pytest.raises(CoralError, match="already finished on Modal"):
        resume_on_modal(run_id, api=api, home=laptop)


# ------------------------------------------------------------------ 8: events in batches


def test_a_generations_events_reach_modal_in_a_dozen_puts(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from coral.modal import double
    from coral.run.events import EventLog

    puts: list[int] = []
    original = double.DoubleQueue.put_many

    def counting(self: Any, vs: list[Any], *args: Any, **kwargs: Any) -> None:
        puts.append(len(vs))
        original(self, vs, *args, **kwargs)

    monkeypatch.setattr(double.DoubleQueue, "put_many", counting)
    transport = ModalTransport(APP, api=ModalDouble())
    log = EventLog("run-ev", tmp_path / "events", transport)
    big = {"blob": "x" * 700_000}  # two of these never share a request
    items = [("job_finished", {"i": i}, 0) for i in range(2600)]
    log.emit_many([*items[:10], ("job_finished", big, 0), ("job_finished", big, 0), *items[10:]])
    assert len(puts) <= 13 and sum(puts) == 2602 and log.published == 2602
    got = transport.queue("events").get_many(5000, block=False, partition="run-ev")
    assert [json.loads(g)["seq"] for g in got] == list(range(2602))  # all, in order


def test_transient_modal_errors_are_retried_then_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from modal import exception as modal_exception

    from coral.execution.transport import modal_backend
    from coral.execution.transport.base import TransportError
    from coral.modal import double

    monkeypatch.setattr(modal_backend, "RETRY_DELAYS", (0.0, 0.0, 0.0))
    failures = [2]
    original = double.DoubleQueue.put_many

    def flaky(self: Any, *args: Any, **kwargs: Any) -> None:
        if failures[0] > 0:
            failures[0] -= 1
            raise modal_exception.ConnectionError("connection reset by peer")
        original(self, *args, **kwargs)

    monkeypatch.setattr(double.DoubleQueue, "put_many", flaky)
    transport = ModalTransport(APP, api=ModalDouble())
    q = transport.queue("jobs-echo")
    q.put("a")  # two drops, then through
    assert q.get(block=False) == "a"
    failures[0] = 10
    with pytest.raises(TransportError) as failed:
        q.put("b")
    assert str(failed.value) == ("Modal queue jobs-echo.put_many failed 4 times: "
                                 "ConnectionError: connection reset by peer")


# ------------------------------------------------------------------ 2: candidates run isolated


def test_test_jobs_run_only_in_the_isolated_evaluate_function(tmp_path: Path) -> None:
    from coral.modal.constants import EVALUATE_FUNCTION
    from coral.modal.runtime import evaluate, serve_tests
    from coral.sandbox.box import isolation_available

    api = ModalDouble()
    api.deployed.register(APP, "test_worker", lambda *a: serve_tests(
        app_name=APP, idle_seconds=a[0], lease_seconds=a[1], run_id=a[2], api=api),
        scaledown_window=0.5)
    transport = ModalTransport(APP, api=api)
    config = Config(modal=ModalConfig(max_containers_test=1, idle_seconds=2),
                    backend=BackendConfig(lease_seconds=2.0, max_retries=0))
    executor = QueueExecutor(transport, "run-iso", config.backend, job_partition="run-iso")
    payload = {"raw": "x", "problem": "p"}
    with ModalLauncher(transport, config, kinds=["test"], run_id="run-iso", interval=0.05):
        refused = executor.submit_batch("test", {"t0": payload}).result(30)[0]
        # Not deployed: the test worker fails the job rather than run the candidate itself.
        assert not refused.ok and "candidate isolation unavailable" in (refused.error or "")
        ran: list[str | None] = []

        def isolated(job: dict[str, Any]) -> str:
            ran.append(api.current_function_call_id())  # a call of its own
            return json.dumps({"ok": True, "output": {"echo": job["payload"]["raw"]}})

        api.deployed.register(APP, EVALUATE_FUNCTION, isolated, restrict_output=True)
        done = executor.submit_batch("test", {"t1": payload}).result(30)[0]
    assert done.ok and done.output == {"echo": "x"} and ran and ran[0] is not None
    job = Job(job_id="t2", run_id="r", kind="test", payload=payload).model_dump(mode="json")
    assert json.loads(evaluate({**job, "kind": "echo"}, network_blocked=True)) == {
        "ok": False, "error": "CoralError: evaluate takes test jobs only, got a echo job"}
    if not isolation_available():  # no namespaces and no network block: refuse
        answer = json.loads(evaluate(job, network_blocked=False))
        assert not answer["ok"] and "candidate isolation unavailable" in answer["error"]


def test_a_run_whose_workers_cannot_start_fails_with_their_error_in_its_events(
    tmp_path: Path,
) -> None:
    fakes = "coral.testing.fakes:HANDLERS"
    api = ModalDouble(volume_root=tmp_path / "volumes")
    overrides = ["backend.lease_seconds=4", "modal.max_start_failures=2"]
    config = load_config(REPO / "configs" / "smoke.yaml", ["backend.kind=modal", *overrides])
    deploy(api, config, bodies=JobBodies(fakes), preload=False, network_blocked=True,
           scaledown_window=0.5)

    class Gated:
        def __init__(self, model: str) -> None:
            raise PermissionError("401 Client Error: gated repo, no HF_TOKEN")

    api.deployed.register_cls(APP, "TrainWorker", Gated, max_containers=2)
    laptop = Home(tmp_path / "laptop")
    run_id, call = submit_run(REPO / "configs" / "smoke.yaml", overrides, api=api, home=laptop)
    out = api.FunctionCall.from_id(call).get(timeout=120)  # returned: Modal does not retry it
    assert out["state"] == "failed" and "train workers failed to start 2 times" in out["error"]
    events = list(read_events(tmp_path / "volumes" / VOLUME / "runs" / run_id / "events"))
    failed = [e for e in events if e.type == "run_failed"]
    assert len(failed) == 1 and "gated repo, no HF_TOKEN" in failed[0].data["error"]
    assert modal_run_status(run_id, api=api, home=laptop)["state"] == "failed"


# ------------------------------------------------------------------ a loaded model blocks reload


def test_a_loaded_model_on_its_own_volume_leaves_job_reloads_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A model loaded on CPU keeps its safetensors file mapped (transformers does); Modal then
    refuses to reload that file's Volume. With the Hugging Face cache on the adapters' Volume
    every job's reload failed; on a Volume of its own, jobs reload the adapters' Volume freely."""
    import mmap

    def mapped_base(ctx: WorkerContext, model: ModelConfig) -> Any:
        path = Path(model.name) / "model.safetensors"
        with open(path, "rb") as handle:  # the file closes; the mapping stays, as with torch
            weights = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        return ctx.resource("base", lambda: weights)

    monkeypatch.setattr("coral.modal.runtime._base", mapped_base)
    api = ModalDouble(volume_root=tmp_path)
    for name in (VOLUME, "models"):
        (tmp_path / name / "hub" / "m").mkdir(parents=True)
        (tmp_path / name / "hub" / "m" / "model.safetensors").write_bytes(b"\0" * 4096)

    def deploy_generate(cls_name: str, models_volume: str | None) -> None:
        mounts = (VOLUME, models_volume or VOLUME)

        def enter(model: str) -> GenerateContainer:
            where = api.Volume.from_name(mounts[1]).path / "hub" / "m"  # HF_HOME's volume
            return GenerateContainer(
                ModelConfig(name=str(where)).model_dump_json(), app_name=APP,
                volume_name=VOLUME, api=api, home=Home(api.Volume.from_name(VOLUME).path),
                handlers={"generate": lambda job, ctx: {"ok": True}},
                models_volume_name=models_volume)

        api.deployed.register_cls(APP, cls_name, enter, volumes=tuple(dict.fromkeys(mounts)))

    queue = ModalTransport(APP, api=api).queue(job_queue("generate"))
    deploy_generate("Shared", None)
    deploy_generate("Separate", "models")
    results: dict[str, Any] = {}
    for cls_name in ("Shared", "Separate"):
        queue.put(encode_job(cls_name), partition=cls_name)
        worker = api.Cls.from_name(APP, cls_name)(model="m")
        results[cls_name] = worker.serve.remote(0.3, 1.0, cls_name)
    assert results["Shared"]["failed"] == 1  # reload refused: the mapped weights are open
    failed = json.loads(ModalTransport(APP, api=api).queue("results").get(partition="Shared"))
    assert "open files preventing the operation" in failed["error"]
    assert results["Separate"] == {"done": 1, "failed": 0, "rejected": 0}
    # Modal's commit reloads too: a worker that committed the models Volume with the model
    # mapped (as preload once did, after downloading) could not start.
    def commit_mapped() -> None:
        where = api.Volume.from_name("models").path / "hub" / "m" / "model.safetensors"
        with open(where, "rb") as handle:
            held = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            api.Volume.from_name("models").commit()
        finally:
            held.close()

    api.deployed.register(APP, "commit_mapped", commit_mapped, volumes=("models",))
    with pytest.raises(RuntimeError, match="open files preventing the operation"):
        api.Function.from_name(APP, "commit_mapped").remote()


def encode_job(run_id: str) -> str:
    from coral.execution.messages import encode

    return encode(Job(job_id="g", run_id=run_id, kind="generate"))
