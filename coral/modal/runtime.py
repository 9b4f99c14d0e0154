"""What runs inside Modal containers: the bodies that coral/modal/app.py's functions call.

The app's functions hold no logic; everything here also runs offline against the Modal double
(`api=ModalDouble(...)`), which is how the tests and `coral validate` exercise it.

Modal facts this code is written against (docs/modal.md, "How it behaves"):
- The Volume holds CORAL_HOME (adapters, runs, the Hugging Face cache). A container sees other
  containers' writes only after they commit and it reloads, so every job runs between a reload
  and a commit, and an adapter claim publishes (commits) before it says "done" and refreshes
  (reloads) before a waiter decides the work is missing.
- @modal.enter runs once per container, before any input: there is no function call id there.
  A worker's id is `modal:CALL_ID`, taken when a call starts serving, so the launcher can match
  lease owners to the calls it spawned.
- Untrusted candidate code never runs in a container that can reach the app's queues, dicts,
  Volume or secrets: the test worker hands each test job to the `evaluate` function (no network,
  no Modal access, nothing mounted) and fails the job if that function is not there.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import yaml

from coral.config import ModelConfig, validate_config
from coral.errors import CoralError
from coral.execution.job_bodies import _base
from coral.execution.jobs import BUILTIN_BODIES, Handler, HandlerOutput, Handlers, JobBodies, WorkerContext
from coral.execution.messages import Job
from coral.execution.payloads import output_json
from coral.execution.transport.base import Transport, TransportError
from coral.execution.transport.modal_backend import ModalTransport, modal_api
from coral.execution.workers import Worker, one_line
from coral.home import Home
from coral.modal.backend import ModalBackend
from coral.modal.constants import CONTAINERS_DICT, EVALUATE_FUNCTION
from coral.run.backend import LIVE_DICT, LIVE_EVERY, LIVE_FILES, RunContext, live_key
from coral.run.control import keep_requests
from coral.run.events import read_events
from coral.run.lifecycle import resume_run, run_from_config
from coral.run.registry import write_status

log = logging.getLogger("coral.modal")

HEARTBEAT_SECONDS = 5.0  # a container's record in CONTAINERS_DICT is rewritten at most this often
# What loading a hub model reads: weights, configs, tokenizer (not other formats' weights).
MODEL_FILES = ["*.json", "*.safetensors", "*.model", "tokenizer*", "*.txt"]


def container_worker_id(api: Any) -> str:
    """'modal:FUNCTION_CALL_ID' of the call being served now (never called in @modal.enter)."""
    call_id = api.current_function_call_id()
    if not call_id:
        raise CoralError("no Modal function call id here: a worker id is taken when a call "
                         "starts serving, never in @modal.enter")
    return f"modal:{call_id}"


def volume_synced(handler: Handler, volume: Any) -> Callable:
    """Reload before the job (see others' adapters), commit after (publish ours), even on error:
    a half-written temporary folder is harmless, a published adapter must not wait."""

    def run(job: Job, ctx: WorkerContext) -> HandlerOutput:
        volume.reload()
        try:
            return handler(job, ctx)
        finally:
            volume.commit()

    return run


class Heartbeat:
    """What `coral modal status` shows for one serving call: its group and run, when it started,
    jobs done, and whether it is busy or idle since when. Written at most every
    HEARTBEAT_SECONDS (and at start and exit), so fast test jobs cost no dict write each."""

    def __init__(self, transport: Transport, worker_id: str, group: str,
                 run_id: str | None) -> None:
        self._dict = transport.dict(CONTAINERS_DICT)
        self.key = worker_id
        now = time.time()
        self.record: dict[str, Any] = {"group": group, "run": run_id, "started": now, "jobs": 0,
                                       "busy": False, "since": now, "seen": now}
        self._written = 0.0
        # What the call spent running jobs, on the monotonic clock: the rest of its life is idle.
        self.busy_seconds = 0.0
        self._opened = time.monotonic()
        self._job_began: float | None = None
        self._write(force=True)

    def _write(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._written < HEARTBEAT_SECONDS:
            return
        self.record["seen"] = now
        try:
            self._dict.put(self.key, self.record)
            self._written = now
        except Exception as exc:  # status is a convenience: never fail a job for it
            log.warning("heartbeat of %s not written: %s", self.key, exc)

    def job_started(self) -> None:
        self._job_began = time.monotonic()
        self.record.update(busy=True, since=time.time())
        self._write()

    def job_ended(self) -> None:
        if self._job_began is not None:
            self.busy_seconds += time.monotonic() - self._job_began
            self._job_began = None
        shown_busy = self._written >= self.record["since"]  # its start was written
        self.record["jobs"] += 1
        self.record.update(busy=False, since=time.time())
        self._write(force=shown_busy)

    def close(self) -> None:
        try:
            self._dict.pop(self.key)
        except Exception:  # gone already, or Modal unreachable: status shows it stale
            pass

    def call_record(self) -> dict[str, Any]:
        """The call's accounting for `coral modal cost`: how long it lived, ran jobs and idled."""
        lived = time.monotonic() - self._opened
        return {"worker": self.key, "group": self.record["group"], "run": self.record["run"],
                "started": self.record["started"], "jobs": self.record["jobs"],
                "lived_seconds": lived, "busy_seconds": self.busy_seconds,
                "idle_seconds": max(0.0, lived - self.busy_seconds)}


CALLS_FOLDER = "calls"  # in a run's folder: one JSON record per worker call (coral.modal.costs)


def record_call(home: Home, record: dict[str, Any]) -> Path:
    """Write a finished call's accounting into its run's folder (the caller commits it)."""
    folder = home.run_dir(str(record["run"])) / CALLS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(record["worker"]))
    path = folder / f"{name}.json"
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(record, sort_keys=True))
    tmp.replace(path)
    return path


RESERVE_SHARE = 0.1  # of a call's timeout kept free for a job before any job's length is known


class CallBudget:
    """When a worker call stops taking jobs: once less of its timeout is left than twice the
    longest job it has run (and at least RESERVE_SHARE of the timeout). A call so lives for
    nearly its whole timeout, so its container (with its loaded model) is not replaced by a
    cold start every half timeout, and a job it starts still ends before Modal stops it."""

    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self._clock = clock
        self.started = clock()
        self.longest = 0.0

    def ran(self, seconds: float) -> None:
        self.longest = max(self.longest, seconds)

    def reserve(self) -> float:
        return max(self.timeout * RESERVE_SHARE, 2 * self.longest)

    def open(self) -> bool:
        return self._clock() - self.started + self.reserve() < self.timeout


def _beating(handler: Handler, beat: Heartbeat, budget: CallBudget | None) -> Handler:
    def run(job: Job, ctx: WorkerContext) -> HandlerOutput:
        beat.job_started()
        started = time.monotonic()
        try:
            return handler(job, ctx)
        finally:
            if budget is not None:
                budget.ran(time.monotonic() - started)
            beat.job_ended()

    return run


def _close_when_spent(budget: CallBudget, stop: threading.Event, done: threading.Event) -> None:
    while not done.wait(1.0):
        if not budget.open():
            stop.set()  # the worker loop takes no new job; the one running finishes
            return


class ContainerWorker:
    """One container's worker. Built once per container (in @modal.enter for the GPU classes),
    so what it loads into its WorkerContext (the base model) serves every call after.

    Without `volume_name` (the test worker) no Volume is touched. `handlers` names extra job
    bodies ("module:attr", as `coral worker --handlers`) or maps kinds to them. `home` is
    CORAL_HOME as this container sees it (default: the CORAL_HOME variable, the Volume's mount).
    """

    def __init__(
        self, kinds: Sequence[str], *, app_name: str, volume_name: str | None = None,
        handlers: str | Mapping[str, Handler | str] | None = None, api: Any = None,
        home: Home | None = None, group: str | None = None,
        models_volume_name: str | None = None,
    ) -> None:
        self.kinds = list(kinds)
        self.group = group or "+".join(self.kinds)
        self.api = modal_api(api)
        self.transport = ModalTransport(app_name, api=self.api)
        base = Handlers(handlers) if isinstance(handlers, Mapping) else Handlers.from_spec(handlers)
        self.volume = self.api.Volume.from_name(volume_name) if volume_name else None
        # The Hugging Face cache: never reloaded here (the loaded model keeps its files mapped),
        # committed once after a download so later containers mount it with the model.
        self.models = self.api.Volume.from_name(models_volume_name) if models_volume_name else None
        self.handlers = base
        # The id of whichever call serves next; set per call in serve().
        self.ctx = WorkerContext(self.transport, worker_id="modal:starting", home=home)
        if self.volume is not None:
            self.handlers = Handlers(
                {kind: volume_synced(base.get(kind), self.volume) for kind in self.kinds}
            )
            self.ctx.publish = self.volume.commit
            self.ctx.refresh = self.volume.reload

    def preload(self, model_json: str) -> None:
        """Load the base model into this container's context now, not at the first job.

        A hub model is in the models Volume already: the orchestrator downloaded and committed
        it before any worker started (prefetch_model), and GPU workers load it offline. Nothing
        here commits that Volume: a commit reloads, which Modal refuses while the loaded
        weights are mapped.
        """
        _base(self.ctx, ModelConfig.model_validate_json(model_json))


    def serve(
        self, *, idle_seconds: float, lease_seconds: float, call_timeout: float | None = None,
        partition: str | None = None, worker_id: str | None = None,
    ) -> dict[str, int]:
        """Run the worker loop over run `partition`'s jobs until `idle_seconds` pass without
        work, or until too little of the call's `call_timeout` is left for another job
        (CallBudget), so a job begun near the function's timeout is not killed."""
        worker_id = worker_id or container_worker_id(self.api)
        self.ctx.worker_id = worker_id
        self.ctx.claim_seconds = lease_seconds
        beat = Heartbeat(self.transport, worker_id, self.group, partition)
        budget = CallBudget(call_timeout) if call_timeout else None
        handlers = Handlers({k: _beating(self.handlers.get(k), beat, budget) for k in self.kinds})
        stop, done = threading.Event(), threading.Event()
        worker = Worker(self.transport, self.kinds, handlers=handlers,
                        lease_seconds=lease_seconds, idle_exit=idle_seconds,
                        worker_id=worker_id, stop=stop, partition=partition)
        worker.ctx = self.ctx  # keep what this container has loaded
        if budget is not None:
            threading.Thread(target=_close_when_spent, args=(budget, stop, done), daemon=True,
                             name="coral-call-budget").start()
        try:
            return dataclasses.asdict(worker.run())
        finally:
            done.set()
            beat.close()
            self._account(beat)

    def _account(self, beat: Heartbeat) -> None:
        """A GPU call's busy and idle seconds, kept in its run's folder on the Volume: what
        `coral modal cost` reports idle time from. Accounting never fails the call."""
        if self.volume is None or not beat.record["run"]:
            return
        try:
            record_call(self.ctx.home, beat.call_record())
            self.volume.commit()
        except Exception as exc:
            log.warning("call accounting of %s not written: %s", beat.key, exc)


def prefetch_model(model: ModelConfig, models: Any) -> bool:
    """Download a hub model's files into the Hugging Face cache on the models Volume (HF_HOME
    is there) and commit them, once, before GPU workers start; False for a local model. The
    orchestrator does this, so eight train containers do not each download and commit 13.5 GB."""
    if models is None or model.name.startswith((".", "/", "~")) or Path(model.name).is_dir():
        return False
    from huggingface_hub import snapshot_download

    models.reload()  # what an earlier run committed: already there, nothing downloaded
    snapshot_download(model.name, allow_patterns=MODEL_FILES)
    models.commit()
    return True


class GroupContainer:
    """The body of a GPU worker class: `__init__` is its @modal.enter (the base model loads once
    per container), `serve` one spawned call. The app's classes only forward to these."""

    kinds: tuple[str, ...] = ()

    def __init__(
        self, model_json: str, *, app_name: str, volume_name: str | None, api: Any = None,
        home: Home | None = None, handlers: str | Mapping[str, Handler | str] | None = None,
        preload: bool = True, call_timeout: float | None = None,
        models_volume_name: str | None = None,
    ) -> None:
        self.worker = ContainerWorker(self.kinds, app_name=app_name, volume_name=volume_name,
                                      handlers=handlers, api=api, home=home,
                                      models_volume_name=models_volume_name)
        self.call_timeout = call_timeout
        if preload:
            self.worker.preload(model_json)

    def serve(self, idle_seconds: float, lease_seconds: float,
              run_id: str | None = None) -> dict[str, int]:
        return self.worker.serve(idle_seconds=idle_seconds, lease_seconds=lease_seconds,
                                 call_timeout=self.call_timeout, partition=run_id)


class TrainContainer(GroupContainer):
    kinds = ("train",)


class GenerateContainer(GroupContainer):
    kinds = ("generate",)


def serve(
    kinds: Sequence[str], *, app_name: str, idle_seconds: float, lease_seconds: float,
    volume_name: str | None = None, call_timeout: float | None = None,
    handlers: str | Mapping[str, Handler | str] | None = None, worker_id: str | None = None,
    api: Any = None, home: Home | None = None, partition: str | None = None,
) -> dict[str, int]:
    """A fresh ContainerWorker's loop: the body of a worker function that loads nothing."""
    worker = ContainerWorker(kinds, app_name=app_name, volume_name=volume_name,
                             handlers=handlers, api=api, home=home)
    return worker.serve(idle_seconds=idle_seconds, lease_seconds=lease_seconds,
                        call_timeout=call_timeout, partition=partition, worker_id=worker_id)


# ------------------------------------------------------------------ tests, isolated


class EvaluateFailed(CoralError):
    """The `evaluate` function reported that a test job failed (its one-line error)."""


def read_evaluation(text: Any) -> dict[str, Any]:
    """The output of one `evaluate` call, from the JSON text it returns: plain data only, so
    nothing a candidate could shape there runs code here (this worker can reach the app's
    queues, dicts and Volume). A failure it reports is raised as EvaluateFailed."""
    if not isinstance(text, str):
        raise EvaluateFailed(f"evaluate returned {type(text).__name__}, not JSON text")
    try:
        answer = json.loads(text)
    except ValueError as exc:
        raise EvaluateFailed(f"evaluate returned text that is not JSON: {exc}") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
        raise EvaluateFailed("evaluate returned JSON without a boolean 'ok'")
    if not answer["ok"]:
        raise EvaluateFailed(str(answer.get("error") or "no error given"))
    output = answer.get("output")
    if not isinstance(output, dict):
        raise EvaluateFailed("evaluate returned ok without an output object")
    return output


def isolated_tests(app_name: str, api: Any = None) -> Handler:
    """The test worker's `test` handler: the job goes to the `evaluate` function, which has no
    network and no access to the app's objects; without it the job fails, never runs here.
    The function is looked up once per container (at its first test job), not per job."""
    api = modal_api(api)
    found: list[Any] = []
    lock = threading.Lock()

    def function() -> Any:
        with lock:
            if not found:
                try:
                    handle = api.Function.from_name(app_name, EVALUATE_FUNCTION)
                    hydrate = getattr(handle, "hydrate", None)  # Modal looks names up lazily
                    if hydrate is not None:
                        hydrate()
                except api.exception.NotFoundError:
                    raise CoralError(
                        f"candidate isolation unavailable: Modal function {EVALUATE_FUNCTION!r} "
                        f"of app {app_name!r} is not deployed; refusing to run untrusted code in "
                        "the test worker (run `coral modal deploy`)") from None
                found.append(handle)
            return found[0]

    def run(job: Job, ctx: WorkerContext) -> dict[str, Any]:
        return read_evaluation(function().remote(job.model_dump(mode="json")))

    return run


def serve_tests(*, app_name: str, idle_seconds: float, lease_seconds: float,
                run_id: str | None = None, call_timeout: float | None = None,
                api: Any = None) -> dict[str, int]:
    """The test worker function's body: test jobs go to `evaluate`; echo jobs run here."""
    return serve(("test", "echo"), app_name=app_name, idle_seconds=idle_seconds,
                 lease_seconds=lease_seconds, call_timeout=call_timeout, partition=run_id, api=api,
                 handlers={"test": isolated_tests(app_name, api)})


_EVALUATE_CONTEXTS: dict[JobBodies, WorkerContext] = {}


def evaluate(job_json: Any, *, network_blocked: bool, bodies: JobBodies = BUILTIN_BODIES) -> str:
    """The `evaluate` function's body: one test job's output as JSON text, {"ok": true,
    "output": {...}} or {"ok": false, "error": "one line"}; it never raises, so its caller never
    receives a pickled exception (and the function is deployed to return CBOR, not pickle).

    The function is deployed with `block_network=True` and `restrict_modal_access=True`,
    nothing mounted and no secrets (`network_blocked`); anywhere else it runs candidates only
    where the sandbox has its namespaces, and refuses otherwise."""
    try:
        output = _evaluate(job_json, network_blocked=network_blocked, bodies=bodies)
        return json.dumps({"ok": True, "output": output})
    except Exception as exc:
        return json.dumps({"ok": False, "error": one_line(exc)})


def _evaluate(job_json: Any, *, network_blocked: bool, bodies: JobBodies) -> dict[str, Any]:
    if not network_blocked:
        from coral.sandbox.box import isolation_available

        if not isolation_available():
            raise CoralError("candidate isolation unavailable: no network block and no sandbox "
                             "namespaces here; refusing to run untrusted code")
    job = Job.model_validate(job_json)
    if job.kind != "test":
        raise CoralError(f"evaluate takes test jobs only, got a {job.kind} job")
    ctx = _EVALUATE_CONTEXTS.get(bodies)
    if ctx is None:
        # No transport: this function may not reach the app's queues or dicts anyway. The
        # context keeps the loaded benchmark between inputs of one container.
        ctx = _EVALUATE_CONTEXTS[bodies] = WorkerContext(
            cast(Transport, None), worker_id="modal:evaluate")
    # JSON, as every job output travels: the body returns its output model.
    return output_json(job.kind, job.job_id, bodies.table().get("test")(job, ctx))


# ------------------------------------------------------------------ the orchestrator

ORCHESTRATOR_RECORD = "modal.json"  # in the run's folder: the orchestrator calls it has had
SIGNALS = ("SIGINT", "SIGTERM")  # a run stopped by one of these was interrupted, not stopped


def stopped_by_signal(home: Home, run_id: str) -> bool:
    """Whether the run's last stop came from a signal to its process (engine.interrupted names
    it in the run_stopped event) rather than a user's stop request. A log that cannot be read
    says no (resuming it fails with that log's own line)."""
    reason = None
    try:
        for event in read_events(home.events_dir(run_id), run_id=run_id):
            if event.type == "run_stopped":
                reason = event.data.get("reason")
    except CoralError:
        return False
    return reason in SIGNALS


def orchestrate(
    config_yaml: str, config_dir: str, run_id: str, *, volume_name: str, api: Any = None,
    home: Home | None = None, bodies: JobBodies = BUILTIN_BODIES,
    progress: Callable[[str, dict], None] | None = None, model_paths: str = "container",
    models_volume_name: str | None = None, launcher_interval: float = 2.0,
) -> dict[str, Any]:
    """A whole run on Modal: a new run from the shipped config, or, when the run is already on
    the Volume (a Modal retry of a crashed orchestrator, or `coral resume RUN_ID`), its resume
    from the last checkpoint. The Volume is committed after every generation, so a crash loses
    at most the generation in flight.

    `config_dir` is the config file's folder as seen in the container, so relative paths in it
    resolve as they did on the laptop. A run stopped by SIGINT or SIGTERM (Modal's preemption)
    raises KeyboardInterrupt, so Modal starts the call again; a user's stop returns "stopped".
    """
    config = validate_config(
        yaml.safe_load(config_yaml) or {}, base_dir=Path(config_dir), source="config sent to Modal"
    )
    api = modal_api(api)
    volume = api.Volume.from_name(volume_name)
    volume.reload()
    home = (home or Home()).ensure()
    folder = home.run_dir(run_id)
    registered = (folder / "config.yaml").exists()
    record_path = folder / ORCHESTRATOR_RECORD
    record = json.loads(record_path.read_text()) if record_path.exists() else {"calls": []}
    call_id = api.current_function_call_id()
    # Modal starts a preempted (or crashed) call's input again under the same call id: the same
    # life of the run, whose user's pause or stop still applies. A new call is `coral resume`.
    restarted = registered and (
        (call_id is not None and bool(record["calls"]) and record["calls"][-1].get("call") == call_id)
        or stopped_by_signal(home, run_id))
    record["calls"].append({"call": call_id, "at": time.time(), "resumed": registered,
                            "restarted": restarted})
    folder.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    volume.commit()

    def on_progress(kind: str, info: dict) -> None:
        if kind == "generation":
            volume.commit()  # the checkpoint is written: make it survive this container
        if progress is not None:
            progress(kind, info)

    # The run's own container: this process drives the engine; workers are Modal calls.
    backend = ModalBackend(api, model_paths=model_paths, interval=launcher_interval)
    context = RunContext(backend, home, bodies, progress=on_progress)
    transport = ModalTransport(config.modal.app_name, api=api)
    publisher = LivePublisher(transport, folder, run_id).start()
    try:
        if models_volume_name is not None:
            prefetch_model(config.model, api.Volume.from_name(models_volume_name))
        if registered:
            result = resume_run(run_id, context, orphaned=True, restarted=restarted)
        else:
            result = run_from_config(config, run_id, context)
        if result.state == "stopped" and stopped_by_signal(home, run_id):
            # Preempted: Modal sends SIGINT, and starts the input again only if it ends without
            # an output, which its runtime does for KeyboardInterrupt. The new call finds the
            # run on the Volume and resumes it; meanwhile workers go on with its queued jobs,
            # unless the user paused or stopped it: that request and its hold stay, and the
            # restarted call honours them. Until then the run is what it was, not "stopped":
            # the dashboard shows it so, and its buttons still reach it.
            request = keep_requests(transport, run_id)
            write_status(home, run_id, "paused" if request == "pause" else "running")
            log.warning("run %s interrupted by a signal: ending without an output, so Modal "
                        "starts this call again and it resumes", run_id)
            raise KeyboardInterrupt(f"run {run_id} preempted")
        return dataclasses.asdict(result)
    except TransportError:
        raise  # Modal unreachable for a while: Modal's retry of this call resumes the run
    except CoralError as exc:
        # The run failed for a reason a retry would meet again (its events and status say
        # which): returned, not raised, so Modal does not retry it. `coral resume` may, later.
        return {"run_id": run_id, "state": "failed", "error": str(exc)}
    finally:
        publisher.stop()  # its last look publishes the run's final status
        volume.commit()


class LivePublisher:
    """Publishes the run folder's live files (LIVE_FILES) to the transport's LIVE_DICT whenever
    they change, from a thread of the orchestrator's container: the Volume is committed once a
    generation, this is how the dashboard sees state, stage counts and each genome's point as
    they happen (coral/run/backend.py). Best effort: a failed put is tried at the next look."""

    def __init__(self, transport: ModalTransport, folder: Path, run_id: str,
                 every: float = LIVE_EVERY) -> None:
        self.folder, self.run_id, self.every = folder, run_id, every
        self.live = transport.dict(LIVE_DICT)
        self.sent: dict[str, bytes] = {}
        self.puts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"coral-live-{run_id}", daemon=True)

    def start(self) -> LivePublisher:
        self._thread.start()
        return self

    def publish(self) -> None:
        for name in LIVE_FILES:
            try:
                data = (self.folder / name).read_bytes()
            except OSError:
                continue  # not written yet
            if self.sent.get(name) == data:
                continue
            try:
                self.live.put(live_key(self.run_id, name), data.decode("utf-8", errors="replace"))
            except CoralError as exc:  # Modal unreachable for a moment: the next look tries again
                log.warning("run %s: could not publish %s: %s", self.run_id, name, exc)
                continue
            self.sent[name] = data
            self.puts += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.publish()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.publish()
