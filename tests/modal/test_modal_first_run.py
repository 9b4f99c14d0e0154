"""Modal's first real run (issue 28), on the Modal double with the real container bodies:
preemption, hardening and what a review of the modal 1.6.4 SDK says Modal really does."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from modal import exception as modal_exception

from coral.config import REPO_ROOT, BackendConfig, Config, ModalConfig, load_config
from coral.errors import CoralError
from coral.execution.executor import QueueExecutor
from coral.execution.jobs import HOLDS_DICT, LEASES_DICT, JobBodies, WorkerContext, hold_key
from coral.execution.messages import Job
from coral.execution.transport.base import TransportError
from coral.execution.transport.modal_backend import ModalTransport
from coral.home import Home
from coral.modal.constants import EVALUATE_FUNCTION
from coral.modal.double import ModalDouble
from coral.modal.errors import ModalFailure, explain
from coral.modal.launcher import ModalLauncher, _shipped, modal_run_status, resume_on_modal, submit_run
from coral.modal.launcher import status as modal_status
from coral.modal.offline import deploy, local_path
from coral.modal.runtime import EvaluateFailed, evaluate, orchestrate, read_evaluation, serve_tests
from coral.run.backend import LIVE_DICT, live_key
from coral.run.control import CONTROL_DICT, control_key, send_request, set_hold
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
    deploy(api, config, bodies=JobBodies(FAKES), preload=False, network_blocked=True, scaledown_window=0.5)
    done: set[str] = set()

    def orchestrator(config_yaml: str, config_dir: str, run_id: str) -> dict[str, Any]:
        def progress(kind: str, info: dict) -> None:
            if (kind == "generation" and info["generation"] == 0 and run_id.startswith("hit-")
                    and run_id not in done):
                done.add(run_id)
                after_generation_0(run_id, api)

        return orchestrate(config_yaml, local_path(config_dir), run_id, volume_name=VOLUME, api=api,
                           home=Home(api.Volume.from_name(VOLUME).path), bodies=JobBodies(FAKES),
                           progress=progress, model_paths="local")

    api.deployed.register(APP, "orchestrator", orchestrator, volumes=(VOLUME,))
    return api


def flaky_smoke_on_double(tmp_path: Path, fault: Callable[[str], None]) -> ModalDouble:
    """The app on a double whose orchestrator is deployed with Modal's retries (2, 0.1 s apart)
    and calls `fault(run_id)` once, when generation 0's checkpoint is committed."""
    api = ModalDouble(volume_root=tmp_path / "volumes")
    config = load_config(SMOKE, ["backend.kind=modal"])
    deploy(api, config, bodies=JobBodies(FAKES), preload=False, network_blocked=True,
           scaledown_window=0.5)
    done: set[str] = set()

    def orchestrator(config_yaml: str, config_dir: str, run_id: str) -> dict[str, Any]:
        def progress(kind: str, info: dict) -> None:
            if kind == "generation" and run_id.startswith("hit-") and run_id not in done:
                done.add(run_id)
                fault(run_id)

        return orchestrate(config_yaml, local_path(config_dir), run_id, volume_name=VOLUME, api=api,
                           home=Home(api.Volume.from_name(VOLUME).path), bodies=JobBodies(FAKES),
                           progress=progress, model_paths="local")

    api.deployed.register(APP, "orchestrator", orchestrator, volumes=(VOLUME,), retries=2,
                          retry_delay=0.1)
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



class LiveStates:
    """Every state a run's published status.json goes through (what the dashboard shows)."""

    def __init__(self, api: ModalDouble, run_id: str) -> None:
        self.live = ModalTransport(APP, api=api).dict(LIVE_DICT)
        self.key, self.seen = live_key(run_id, "status.json"), []  # type: list[str]
        self._done = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def now(self) -> str | None:
        text = self.live.get(self.key)
        return json.loads(text)["state"] if text else None

    def _watch(self) -> None:
        while not self._done.wait(0.02):
            state = self.now()
            if state and (not self.seen or self.seen[-1] != state):
                self.seen.append(state)

    def stop(self) -> list[str]:
        self._done.set()
        return self.seen


def pause_then_preempt(run_id: str, api: ModalDouble) -> None:
    """The user pauses the run; once it is paused, Modal preempts its container."""
    transport = ModalTransport(APP, api=api)
    send_request(transport, run_id, "running", "pause")
    states = LiveStates(api, run_id)

    def later() -> None:
        deadline = time.monotonic() + 30
        while states.now() != "paused" and time.monotonic() < deadline:
            time.sleep(0.02)
        states.stop()
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=later, daemon=True).start()


def stop_and_preempt(run_id: str, api: ModalDouble) -> None:
    """The user's stop and Modal's preemption arrive together; the signal is seen first."""
    send_request(ModalTransport(APP, api=api), run_id, "running", "stop")
    os.kill(os.getpid(), signal.SIGINT)


def test_a_paused_run_preempted_by_modal_comes_back_paused(tmp_path: Path) -> None:
    # Before: the preempted orchestrator lifted the pause hold and the restarted call cleared
    # the pause request, so the run the user paused went on (and its status showed "stopped"
    # between the two calls, where the dashboard's buttons refuse a stopped run).
    api = smoke_on_double(tmp_path, pause_then_preempt)
    text, config_dir = shipped_smoke()
    states = LiveStates(api, "hit-paused")
    call = api.Function.from_name(APP, "orchestrator").spawn_here(text, config_dir, "hit-paused")
    assert call.restarts == 1  # no output: Modal started the input again
    with pytest.raises(TimeoutError):
        call.get(timeout=3)  # paused: it does not go on
    transport = ModalTransport(APP, api=api)
    assert transport.dict(HOLDS_DICT).get(hold_key("hit-paused"))["request"] == "pause"
    assert states.now() == "paused"
    send_request(transport, "hit-paused", "paused", "continue")
    assert call.get(timeout=120)["state"] == "finished"
    assert "stopped" not in states.stop()  # paused throughout the restart, then running again
    folder = tmp_path / "volumes" / VOLUME / "runs" / "hit-paused"
    record = json.loads((folder / "modal.json").read_text())
    assert [(c["resumed"], c["restarted"]) for c in record["calls"]] == [(False, False), (True, True)]
    events = list(read_events(folder / "events"))
    assert [e.type for e in events if e.type.startswith("run_")] == [
        "run_started", "run_paused", "run_continued", "run_finished"]
    assert [e.generation for e in events if e.type == "generation_finished"] == [0, 1]


def test_a_stop_that_meets_a_preemption_still_stops_the_run(tmp_path: Path) -> None:
    # Before: the restarted call cleared the user's stop request and ran the run to its end.
    api = smoke_on_double(tmp_path, stop_and_preempt)
    text, config_dir = shipped_smoke()
    call = api.Function.from_name(APP, "orchestrator").spawn_here(text, config_dir, "hit-stopboth")
    assert call.get(timeout=120)["state"] == "stopped"
    assert call.restarts == 1
    events = list(read_events(tmp_path / "volumes" / VOLUME / "runs" / "hit-stopboth" / "events"))
    assert [e.data["reason"] for e in events if e.type == "run_stopped"] == ["stop requested"]
    assert not [e for e in events if e.type == "run_finished"]


def test_coral_resume_is_a_new_life_that_drops_old_requests(tmp_path: Path) -> None:
    api = smoke_on_double(tmp_path, user_stop)
    laptop = Home(tmp_path / "laptop")
    run_id, first = submit_run(SMOKE, [], "hit-resumed", api=api, home=laptop)
    assert api.FunctionCall.from_id(first).get(timeout=120)["state"] == "stopped"
    second = resume_on_modal(run_id, api=api, home=laptop)  # the user's stop is not applied again
    assert api.FunctionCall.from_id(second).get(timeout=120)["state"] == "finished"



def test_an_orchestrator_that_loses_modal_is_retried_by_modal_and_resumes(tmp_path: Path) -> None:
    def unreachable(run_id: str) -> None:
        raise TransportError("Dict.get of coral-control failed: Modal unreachable")

    api = flaky_smoke_on_double(tmp_path, unreachable)
    text, config_dir = shipped_smoke()
    orchestrator = api.Function.from_name(APP, "orchestrator")
    assert orchestrator.spawn(text, config_dir, "ref").get(timeout=120)["state"] == "finished"
    call = orchestrator.spawn(text, config_dir, "hit-unreachable")
    assert call.get(timeout=120)["state"] == "finished"
    assert call.retries == 1  # raised, so Modal ran the input again (orchestrator_retries)
    folder = tmp_path / "volumes" / VOLUME / "runs" / "hit-unreachable"
    record = json.loads((folder / "modal.json").read_text())
    assert [(c["resumed"], c["restarted"]) for c in record["calls"]] == [(False, False), (True, True)]
    assert compare_runs(Home(tmp_path / "volumes" / VOLUME), "ref", "hit-unreachable") == {
        "populations": True, "scores": True, "event_ids": True, "events": True}


def test_a_run_that_fails_for_good_is_not_retried(tmp_path: Path) -> None:
    def broken(run_id: str) -> None:
        raise CoralError("adapter folder is damaged")

    api = flaky_smoke_on_double(tmp_path, broken)
    text, config_dir = shipped_smoke()
    call = api.Function.from_name(APP, "orchestrator").spawn(text, config_dir, "hit-broken")
    out = call.get(timeout=120)
    assert (out["state"], out["error"], call.retries) == ("failed", "adapter folder is damaged", 0)


# ------------------------------------------------------------------ 6: hardening


def isolated_test(job: Job, ctx: WorkerContext) -> dict[str, Any]:
    if job.payload.get("raw") == "boom":
        raise ValueError("the candidate broke the harness")
    return {"echo": job.payload["raw"], "pickle_free": True}


HANDLERS = {"test": isolated_test}


def test_evaluate_answers_json_never_raises_and_is_looked_up_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from coral.modal import double

    api = ModalDouble()
    lookups: list[str] = []
    original = double._FunctionFactory.from_name

    def counting(self: Any, app_name: str, name: str, **kwargs: Any) -> Any:
        lookups.append(name)
        return original(self, app_name, name, **kwargs)

    monkeypatch.setattr(double._FunctionFactory, "from_name", counting)
    api.deployed.register(APP, "test_worker", lambda *a: serve_tests(
        app_name=APP, idle_seconds=a[0], lease_seconds=a[1], run_id=a[2], api=api),
        max_containers=1, scaledown_window=0.5)
    api.deployed.register(APP, EVALUATE_FUNCTION, lambda job: evaluate(
        job, network_blocked=True, bodies=JobBodies("test_modal_first_run:HANDLERS")), restrict_output=True)
    transport = ModalTransport(APP, api=api)
    config = Config(modal=ModalConfig(max_containers_test=1, idle_seconds=2),
                    backend=BackendConfig(lease_seconds=2.0, max_retries=0))
    executor = QueueExecutor(transport, "run-h", config.backend, job_partition="run-h")
    jobs = {f"t{i}": {"raw": "boom" if i == 3 else f"x{i}"} for i in range(20)}
    with ModalLauncher(transport, config, kinds=["test"], run_id="run-h", interval=0.05):
        results = executor.submit_batch("test", jobs).result(60)
    assert [r.ok for r in results] == [i != 3 for i in range(20)]
    assert results[0].output == {"echo": "x0", "pickle_free": True}
    # The failure is evaluate's one line, carried as JSON, not a pickled exception.
    assert results[3].error == "EvaluateFailed: ValueError: the candidate broke the harness"
    assert lookups.count(EVALUATE_FUNCTION) == 1  # one container, one lookup, 20 jobs
    # What evaluate returns for input it cannot even read: an answer, not an exception.
    assert json.loads(evaluate("not a job", network_blocked=True))["ok"] is False


def test_evaluate_output_crosses_as_cbor_or_not_at_all() -> None:
    api = ModalDouble()
    api.deployed.register(APP, "pickled", lambda: {"object": object()}, restrict_output=True)
    with pytest.raises(Exception, match="Can not serialize type builtins.dict as cbor"):
        api.Function.from_name(APP, "pickled").remote()
    for bad in (b"\x80\x04pickle", {"ok": True}, "[1]", json.dumps({"ok": False, "error": "x"})):
        with pytest.raises(EvaluateFailed):
            read_evaluation(bad)


def test_dispatch_batches_are_capped_in_bytes_as_well_as_jobs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from coral.modal import double

    requests: list[int] = []
    original = double.DoubleQueue.put_many

    def measuring(self: Any, vs: list[Any], *args: Any, **kwargs: Any) -> None:
        if self.name.endswith("jobs-echo"):
            requests.append(sum(len(v.encode("utf-8")) for v in vs))
        original(self, vs, *args, **kwargs)

    monkeypatch.setattr(double.DoubleQueue, "put_many", measuring)
    transport = ModalTransport(APP, api=ModalDouble())
    executor = QueueExecutor(transport, "run-b", BackendConfig(lease_seconds=5.0))
    executor.submit_batch("echo", {f"j{i}": {"blob": "x" * 300_000} for i in range(30)})
    assert len(requests) >= 9 and max(requests) <= 1024 * 1024  # not one 9 MB request
    got = transport.queue("jobs-echo").get_many(100, block=False)
    assert len(got) == 30


# ------------------------------------------------------------------ issue 27: an undrained run


def test_a_full_events_partition_costs_one_failed_call_per_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from coral.modal import double
    from coral.run.events import EventLog

    calls: list[bool] = []  # True: the put went through
    original = double.DoubleQueue.put_many

    def counting(self: Any, vs: list[Any], *args: Any, **kwargs: Any) -> None:
        try:
            original(self, vs, *args, **kwargs)
        except BaseException:
            calls.append(False)
            raise
        calls.append(True)

    monkeypatch.setattr(double.DoubleQueue, "put_many", counting)
    transport = ModalTransport(APP, api=ModalDouble())
    log = EventLog("run-full", tmp_path / "events", transport)
    log.emit("run_started", {})
    failed: list[int] = []
    for generation in range(4):  # ~2,600 events a generation, in the engine's batches
        log.emit("generation_started", {}, generation)
        for _ in range(26):
            log.emit_many([("job_finished", {"i": i}, generation) for i in range(100)])
        log.emit("generation_finished", {}, generation)
        failed.append(calls.count(False) - sum(failed))
    assert failed[0] == 0 or failed[0] == 1  # the partition (5,000) fills during generation 1
    assert all(n <= 1 for n in failed), failed  # before: 0, 208, 2,628, 2,628 failed calls
    assert sum(failed) >= 2
    assert len(list(read_events(tmp_path / "events"))) == log.seq  # the log has every event
    assert 4800 < log.published <= 5000 and log.published + log.skipped_publish == log.seq


# ------------------------------------------------------------------ issue 27: one clear line


def submitted(tmp_path: Path, api: ModalDouble, home: Home) -> str:
    """A run submitted to an orchestrator that has not committed anything yet."""
    gate = threading.Event()
    api.deployed.register(APP, "orchestrator", lambda *a: gate.wait(30) and {"state": "x"})
    api.Volume.from_name(VOLUME, create_if_missing=True).hydrate()
    run_id, _ = submit_run(SMOKE, ["modal.volume=" + VOLUME], api=api, home=home)
    gate.set()
    return run_id


def test_status_of_a_modal_run_works_from_submission(tmp_path: Path) -> None:
    api = ModalDouble(volume_root=tmp_path / "volumes")
    home = Home(tmp_path / "laptop")
    run_id = submitted(tmp_path, api, home)
    assert modal_run_status(run_id, api=api, home=home)["state"] == "submitted"


def _raise(exc: BaseException) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return fail


@pytest.mark.parametrize(("failure", "expected"), [
    (modal_exception.AuthError("Token ID is malformed or expired"), "run `modal setup`"),
    (modal_exception.ConnectionError("Deadline exceeded"), "Modal is unreachable"),
    (modal_exception.ResourceExhaustedError("Too many requests"), "quota or rate limit"),
])
def test_every_modal_failure_a_user_meets_is_one_line_naming_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: Exception, expected: str,
) -> None:
    from coral.modal import double

    api = ModalDouble(volume_root=tmp_path / "volumes")
    home = Home(tmp_path / "laptop")
    run_id = submitted(tmp_path, api, home)
    api.deployed.register(APP, "test_worker", lambda *a: None)
    monkeypatch.setattr(double.DoubleFunction, "spawn", _raise(failure))
    monkeypatch.setattr(double.DoubleFunctionCall, "get", _raise(failure))
    monkeypatch.setattr(double.DoubleVolume, "read_file", _raise(failure))
    monkeypatch.setattr(double.DoubleFunction, "get_current_stats", _raise(failure))
    config = load_config(SMOKE, ["backend.kind=modal"])
    for attempt in (lambda: submit_run(SMOKE, [], api=api, home=home),
                    lambda: resume_on_modal(run_id, api=api, home=home),
                    lambda: modal_run_status(run_id, api=api, home=home),
                    lambda: modal_status(config, api=api)):
        with pytest.raises(ModalFailure) as caught:
            attempt()
        line = str(caught.value)
        assert expected in line and "\n" not in line, line


def test_missing_apps_volumes_and_secrets_say_what_to_run(tmp_path: Path) -> None:
    api = ModalDouble(volume_root=tmp_path / "volumes")
    home = Home(tmp_path / "laptop")
    with pytest.raises(ModalFailure, match=r"Modal app 'coral' has no 'orchestrator'.*not deployed"
                                           r".*coral modal deploy CONFIG"):
        submit_run(SMOKE, [], api=api, home=home)  # nothing deployed
    api.deployed.register("other-name", "orchestrator", lambda *a: None)
    with pytest.raises(ModalFailure, match="another name.*modal.app_name"):
        submit_run(SMOKE, [], api=api, home=home)  # deployed under another app name
    run_id = submitted(tmp_path, api, home)
    (home.root / "modal-runs" / f"{run_id}.json").write_text(json.dumps(
        {**json.loads((home.root / "modal-runs" / f"{run_id}.json").read_text()),
         "volume": "gone-volume"}))
    with pytest.raises(ModalFailure, match="Modal Volume 'gone-volume' does not exist.*deploy"):
        modal_run_status(run_id, api=api, home=home)
    secret = modal_exception.NotFoundError("Secret 'huggingface' not found in environment 'main'")
    assert "modal secret create" in (explain(secret, app=APP) or "")


# ------------------------------------------------------------------ 2: pay for work, not waiting


def test_a_job_for_a_warm_idle_worker_spawns_no_new_call() -> None:
    api = ModalDouble()
    config = Config(modal=ModalConfig(max_containers_test=4, idle_seconds=10),
                    backend=BackendConfig(lease_seconds=2.0))
    transport = ModalTransport(APP, api=api)
    jobs, leases = transport.queue("jobs-echo"), transport.dict(LEASES_DICT)
    took, done, release = threading.Event(), threading.Event(), threading.Event()

    def warm_worker(idle: float, lease: float, run_id: str | None = None) -> dict[str, int]:
        # A worker call as the launcher sees one: it takes a job (owning its lease), finishes
        # it (the lease goes), then waits for the next job.
        jobs.get_many(1, timeout=10, partition=run_id)
        leases.put("lease:run-w:a:0", {"owner": f"modal:{api.current_function_call_id()}",
                                       "expires": time.time() + 60})
        took.set()
        done.wait(30)
        leases.pop("lease:run-w:a:0")
        release.wait(30)
        return {}

    api.deployed.register(APP, "test_worker", warm_worker, max_containers=4)
    launcher = ModalLauncher(transport, config, kinds=["echo"], run_id="run-w")
    try:
        jobs.put("a", partition="run-w")
        assert launcher.scale() == {"test": 1}
        took.wait(10)
        assert launcher.scale() == {"test": 0}  # seen working; nothing waits
        done.set()
        wait_for_value(lambda: not leases.get("lease:run-w:a:0"))
        jobs.put("b", partition="run-w")  # arrives while the warm call waits for work
        assert launcher.scale() == {"test": 0}  # before: a second (cold, paid) call
        assert launcher.spawned == 1
    finally:
        release.set()


def wait_for_value(what: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := what()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return value


def test_a_worker_call_takes_jobs_for_nearly_its_whole_timeout() -> None:
    from coral.modal.runtime import CallBudget

    now = [0.0]
    budget = CallBudget(3600, clock=lambda: now[0])
    now[0] = 1800.0
    assert budget.open()  # before: no job taken after half the timeout
    budget.ran(300.0)  # a long training job: keep twice that free
    now[0] = 2999.0
    assert budget.open()
    now[0] = 3001.0
    assert not budget.open()
    quick = CallBudget(600, clock=lambda: now[0])
    now[0] += 539.0
    assert quick.open()  # short jobs: 10% of the timeout kept free
    now[0] += 2.0
    assert not quick.open()


def test_a_spent_call_stops_taking_jobs_and_the_running_one_finishes() -> None:
    from coral.modal.runtime import serve

    api = ModalDouble()
    transport = ModalTransport(APP, api=api)
    executor = QueueExecutor(transport, "run-t", BackendConfig(lease_seconds=5.0))
    future = executor.submit_batch("echo", {f"j{i}": {"sleep_s": 0.4} for i in range(40)})
    started = time.monotonic()
    out = serve(["echo"], app_name=APP, idle_seconds=30, lease_seconds=5.0, call_timeout=3.0,
                handlers="coral.testing.handlers:HANDLERS", worker_id="modal:w", api=api)
    spent = time.monotonic() - started
    assert 1.5 < spent < 3.0 + 1.5  # took jobs past half its timeout; ended before idling 30 s
    assert out["done"] >= 4 and out["failed"] == 0
    assert transport.queue("jobs-echo").len() == 40 - out["done"]  # the rest wait, untouched
    del future


def test_hub_weights_are_fingerprinted_by_their_cache_names_without_reading_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import hashlib

    from huggingface_hub import constants

    from coral.config import ModelConfig
    from coral.model.loading import base_fingerprint

    weights = b"\x00" * 4096
    sha = hashlib.sha256(weights).hexdigest()
    repo = tmp_path / "hub" / "models--org--big"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / sha).write_bytes(weights)
    (repo / "blobs" / "cfg").write_text("{}")
    snapshot = repo / "snapshots" / "rev1"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(Path("../../blobs") / sha)
    (snapshot / "config.json").symlink_to(Path("../../blobs/cfg"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("rev1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model = ModelConfig(name="org/big", dtype="bfloat16")
    first = base_fingerprint(model)
    (repo / "blobs" / sha).write_bytes(b"never read")  # only its name counts
    assert base_fingerprint(model) == first
    assert base_fingerprint(model.model_copy(update={"dtype": "float32"})) != first
    local = tmp_path / "local"  # a plain folder has no such names: its files are read
    local.mkdir()
    (local / "model.safetensors").write_bytes(weights)
    before = base_fingerprint(ModelConfig(name=str(local)))
    (local / "model.safetensors").write_bytes(b"changed")
    assert base_fingerprint(ModelConfig(name=str(local))) != before


# ------------------------------------------------------------------ 3: memory known before paying


def test_large_models_train_with_gradient_checkpointing_to_the_same_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch
    from model_fixtures import build_tiny_model, problems
    from safetensors.torch import load_file

    from coral.config import ModelConfig, TrainingConfig
    from coral.evolution.genome import HeavyGenes
    from coral.model import train as train_module
    from coral.model.adapters import ADAPTER_WEIGHTS, adapter_cache_key, data_fingerprint
    from coral.model.loading import load_base_model

    torch.set_num_threads(1)
    base = load_base_model(ModelConfig(name=str(build_tiny_model(tmp_path / "tiny")), device="cpu"))
    genes = HeavyGenes(rank=4, alpha=8, dropout=0.1, target_modules=("q_proj", "v_proj", "up_proj"),
                       adapter_type="lora")
    pairs = train_module.training_pairs(problems(["add", "mul"]))
    training = TrainingConfig(steps=6, learning_rate=1e-2, batch_size=2, max_length=256)
    key = adapter_cache_key(genes, base.fingerprint, data_fingerprint(pairs), training)
    seen: list[bool] = []
    forward = type(base.model).forward

    def watching(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(bool(self.model.gradient_checkpointing and self.training))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(base.model), "forward", watching)
    plain = train_module.train_adapter(base, genes, pairs, training, Home(tmp_path / "a"), key)
    assert not any(seen)  # a tiny model: no checkpointing
    monkeypatch.setattr(train_module, "CHECKPOINT_PARAMS", 1)  # as a 7B model would
    seen.clear()
    checkpointed = train_module.train_adapter(base, genes, pairs, training, Home(tmp_path / "b"), key)
    assert seen and all(seen)
    assert not base.model.model.gradient_checkpointing  # off again for generation
    assert plain.path is not None and checkpointed.path is not None
    a = load_file(str(plain.path / ADAPTER_WEIGHTS))
    b = load_file(str(checkpointed.path / ADAPTER_WEIGHTS))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert checkpointed.loss_curve == pytest.approx(plain.loss_curve, abs=1e-6)


def test_modal_plan_prints_each_stage_and_refuses_what_will_not_fit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from coral.cli import main

    config = str(REPO_ROOT / "configs" / "modal-codellama.yaml")
    on = ["--set", "modal.gpu_train=H200", "--set", "modal.gpu_generate=H200"]
    assert main(["modal", "plan", config, *on]) == 0  # no token, no network
    out = capsys.readouterr().out
    assert "6.74B parameters" in out and "checkpointed" in out
    assert [line.split()[0] for line in out.splitlines()[2:]] == [
        "train", "generate", "test", "total"]
    on = ["--set", "modal.gpu_train=H100", "--set", "modal.gpu_generate=H100"]
    assert main(["modal", "plan", config, *on]) == 2
    captured = capsys.readouterr()
    assert "DOES NOT FIT" in captured.out
    error = captured.err.strip()
    assert error.startswith("coral: error: generation on H100 needs ~76 GB of 80 GB")
    assert "set generation.batch_size: 90" in error and "\n" not in error
    # What it says to change does fit.
    fixed = [*on, "--set", "generation.batch_size=90"]
    assert main(["modal", "plan", config, *fixed]) == 0
    capsys.readouterr()
    assert main(["modal", "plan", config, "--set", "modal.gpu_generate=L4"]) == 2
    assert "merged layer copies alone need ~26 GB" in capsys.readouterr().err


# ------------------------------------------------------------------ 4: what Modal will run


def test_registration_and_checkpoints_work_without_hard_links_or_folder_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno
    import stat

    from coral.errors import CoralError
    from coral.run import checkpoints
    from coral.run.registry import create_exclusive

    def no_link(src: Any, dst: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")  # as on a mount without link(2)

    real_fsync = os.fsync

    def no_folder_fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(os, "fsync", no_folder_fsync)
    record = tmp_path / "config.yaml"
    create_exclusive(record, "run: 1\n", "already exists")
    assert record.read_text() == "run: 1\n"
    with pytest.raises(CoralError, match="already exists"):
        create_exclusive(record, "run: 2\n", "already exists")  # still only one creator wins
    assert record.read_text() == "run: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # no temp file left
    checkpoints.write_atomic(tmp_path / "ckpt" / "gen-00000.json", "{}\n")
    assert (tmp_path / "ckpt" / "gen-00000.json").read_text() == "{}\n"


def test_the_orchestrator_downloads_a_hub_model_once_before_workers_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import huggingface_hub

    from coral.config import ModelConfig
    from coral.modal.runtime import prefetch_model

    api = ModalDouble(volume_root=tmp_path)
    api.Volume.from_name("models", create_if_missing=True).hydrate()
    downloads: list[str] = []

    def snapshot_download(repo_id: str, allow_patterns: list[str]) -> str:
        # The hub, which this machine cannot reach: files land in HF_HOME, on the Volume.
        downloads.append(repo_id)
        folder = api.Volume.from_name("models").path / "hub" / repo_id.replace("/", "--")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.safetensors").write_bytes(b"\0" * 64)
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    api.deployed.register(APP, "prefetch", lambda name: prefetch_model(
        ModelConfig(name=name), api.Volume.from_name("models")), volumes=("models",))
    prefetch = api.Function.from_name(APP, "prefetch")
    assert prefetch.remote("org/big") is True
    assert (tmp_path / "models" / "hub" / "org--big" / "model.safetensors").is_file()  # committed
    assert prefetch.remote(str(REPO_ROOT / "data" / "models" / "tiny-code")) is False  # a local model: nothing to fetch
    assert downloads == ["org/big"]


# ------------------------------------------------------------------ 5: the live test's own parts


def test_the_live_tests_wait_ends_at_the_first_checkpoint_and_cleanup_needs_no_terminal(
    tmp_path: Path,
) -> None:
    from test_modal_live import cleanup_commands, live_names

    from coral.modal.launcher import modal_run_checkpoints

    laptop = Home(tmp_path / "laptop")
    seen: list[tuple[list[int], dict[str, Any]]] = []
    api = smoke_on_double(tmp_path, lambda run_id, api: seen.append((
        modal_run_checkpoints(run_id, api=api, home=laptop),
        modal_run_status(run_id, api=api, home=laptop))))
    run_id, call = submit_run(SMOKE, [], "hit-live", api=api, home=laptop)
    assert api.FunctionCall.from_id(call).get(timeout=180)["state"] == "finished"
    checkpoints, status = seen[0]
    assert checkpoints == [0]  # the new wait ends here, after generation 0
    assert status.get("generation", 0) < 1  # the old wait (status) would have gone on
    assert modal_run_checkpoints(run_id, api=api, home=laptop) == [0, 1]
    commands = cleanup_commands("coral-live-ab12")
    assert commands[0][-3:] == ["stop", "--yes", "coral-live-ab12"]
    deleted = {c[-1] for c in commands[1:]}
    assert all(c[-2] == "--yes" for c in commands[1:])
    assert deleted == {n for kind in ("volume", "queue", "dict")
                       for n in live_names("coral-live-ab12")[kind]}
    assert all(n.startswith("coral-live-ab12-") for n in deleted)  # its own objects only
    assert "coral-live-ab12-models" in deleted
