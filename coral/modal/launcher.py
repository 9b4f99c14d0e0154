"""Driving the deployed Modal app from CORAL: scale workers, submit runs, report status.

`ModalLauncher` is the WorkerLauncher of the modal backend. Every `interval` seconds it looks at
the job queues and spawns worker calls (train_worker, GenerateWorker.serve, test_worker) so
that each waiting job has a worker on its way, up to `modal.max_containers` per function. A
worker exits by itself after `modal.idle_seconds` without work, so `stop()` only stops spawning:
the queues are shared by every run, and a worker may be serving another run's job.

A spawned call counts as *starting* until it is seen owning a lease (worker id
`modal:CALL_ID`); starting calls are matched against waiting jobs, so a slow cold start does
not make the launcher spawn again for the same jobs.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from coral.config import REPO_ROOT, Config, ModelConfig, apply_overrides, read_yaml, validate_config
from coral.errors import ConfigError, CoralError
from coral.execution.jobs import CLAIMS_DICT, EVENTS_QUEUE, JOB_KINDS, LEASES_DICT, RESULTS_QUEUE, job_queue
from coral.execution.transport.modal_backend import ModalTransport, modal_api
from coral.execution.workers import WorkerLauncher, one_line
from coral.home import Home, new_run_id
from coral.modal.constants import CONTAINER_HOME, CONTAINER_REPO, CONTAINERS_DICT
from coral.modal.errors import modal_failures
from coral.model.adapters import TEMP_PREFIX
from coral.run.checkpoints import PREFIX as CHECKPOINT_PREFIX

log = logging.getLogger("coral.modal")

DEFAULT_CONFIG = REPO_ROOT / "configs" / "modal-codellama.yaml"
HEARTBEAT_SLACK = 5.0  # seconds a container's status record may lag (its write interval)
MAX_BACKOFF = 60.0  # seconds between spawn attempts of a group whose calls fail to start


@dataclass(frozen=True)
class WorkerGroup:
    """The job kinds one deployed worker function serves."""

    name: str
    kinds: tuple[str, ...]
    function: str  # a function name, or "Class.method"


GROUPS = (
    WorkerGroup("train", ("train",), "TrainWorker.serve"),
    WorkerGroup("generate", ("generate",), "GenerateWorker.serve"),
    WorkerGroup("test", ("test", "echo"), "test_worker"),
)


def container_path(path: str) -> str:
    """A local model path as the containers see it: the checkout is at /root. CORAL_HOME is
    the adapters' Volume, which every job reloads, and a loaded model keeps its files mapped
    (docs/modal.md, "Volume sync"): a model there would block every reload, so it is refused.
    Paths elsewhere do not exist on Modal."""
    local = Path(path).expanduser().resolve()
    if local == REPO_ROOT or REPO_ROOT in local.parents:
        return str(PurePosixPath(CONTAINER_REPO) / local.relative_to(REPO_ROOT).as_posix())
    if str(local).startswith(CONTAINER_REPO + "/"):
        return str(local)  # already a container path (the orchestrator runs on Modal)
    home = Home().root
    if local == home or home in local.parents or str(local).startswith(CONTAINER_HOME + "/"):
        raise ConfigError(
            f"model.name {path!r}: a model under CORAL_HOME would sit on the Volume every job "
            "reloads, which Modal refuses while the model's files are mapped; use a Hugging Face "
            "id, or a path in the CORAL checkout")
    raise ConfigError(
        f"model.name {path!r}: a local model must live in the CORAL checkout to be visible on "
        "Modal; use a Hugging Face id instead"
    )


def container_model_json(model: ModelConfig) -> str:
    """The `model` section as GenerateWorker's parameter, with paths as containers see them."""
    name = model.name
    if name.startswith((".", "/", "~")):
        name = container_path(name)
    return model.model_copy(update={"name": name}).model_dump_json()


class ModalLauncher(WorkerLauncher):
    """Spawns Modal worker calls as run `run_id`'s job partitions need them (see the module
    docstring), and gives up on a group whose calls keep failing before they take a job.

    `model_paths="container"` turns a local model path into the path the containers see; the
    Modal double runs in this machine's file system (`"local"`).
    """

    def __init__(
        self, transport: ModalTransport, config: Config, *, kinds: Sequence[str] | None = None,
        interval: float = 2.0, run_id: str | None = None, backoff: float = 2.0,
        model_paths: str = "container",
    ) -> None:
        if not isinstance(transport, ModalTransport):
            raise CoralError(f"the Modal launcher needs the modal transport, got {transport.name}")
        self.config = config
        self.transport = transport
        self.api = transport.api
        self.run_id = run_id  # its jobs' partition; None: the shared default partition
        wanted = set(kinds) if kinds is not None else set(JOB_KINDS)
        self.groups = [g for g in GROUPS if wanted & set(g.kinds)]
        if not self.groups:
            raise CoralError(f"no Modal worker serves job kinds {sorted(wanted)}")
        self.interval = interval
        self.backoff = backoff
        self.model_json = (container_model_json(config.model) if model_paths == "container"
                           else config.model.model_dump_json())
        self._queues = {k: self.transport.queue(job_queue(k)) for g in self.groups for k in g.kinds}
        self._leases = self.transport.dict(LEASES_DICT)
        self._calls: dict[str, list[Any]] = {g.name: [] for g in self.groups}
        self._seen_working: set[str] = set()
        self._start_failures: dict[str, int] = {g.name: 0 for g in self.groups}
        self._not_before: dict[str, float] = {g.name: 0.0 for g in self.groups}
        self.failure: str | None = None  # why the run cannot go on (check() raises it)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.spawned = 0

    def cap(self, group: WorkerGroup) -> int:
        modal = self.config.modal
        return modal.max_containers_test if group.name == "test" else modal.max_containers

    def _function(self, group: WorkerGroup) -> Any:
        app = self.config.modal.app_name
        if "." in group.function:
            cls_name, method = group.function.split(".", 1)
            obj = self.api.Cls.from_name(app, cls_name)(model=self.model_json)
            return getattr(obj, method)
        return self.api.Function.from_name(app, group.function)

    def _ended(self, group: WorkerGroup, call: Any) -> bool:
        """Whether `call` has ended; a call that failed before it was seen owning a lease is a
        start failure of its group (gated model without its secret, out of memory, ...)."""
        try:
            call.get(timeout=0)
        except TimeoutError:
            return False
        except Exception as exc:
            if call.object_id in self._seen_working:
                log.warning("modal %s worker %s ended with %s", group.name, call.object_id,
                            one_line(exc))
                return True  # it worked: its job's lease expires and the executor retries
            self._start_failures[group.name] += 1
            n = self._start_failures[group.name]
            log.warning("modal %s worker %s failed to start (%d in a row): %s", group.name,
                        call.object_id, n, one_line(exc))
            if n >= self.config.modal.max_start_failures and self.failure is None:
                self.failure = (f"{group.name} workers failed to start {n} times in a row; "
                                f"last error: {one_line(exc)}")
            # Exponential backoff, so a broken image is not respawned every few seconds.
            self._not_before[group.name] = time.monotonic() + min(
                self.backoff * 2 ** (n - 1), MAX_BACKOFF)
            return True
        return True

    def scale(self) -> dict[str, int]:
        """Spawn the calls this run's queues need now; how many were spawned, per group."""
        with self._lock:
            owners = {str(v.get("owner")) for _, v in self._leases.items() if isinstance(v, dict)}
            spawned: dict[str, int] = {}
            for group in self.groups:
                calls = self._calls[group.name]
                for call in calls:
                    if f"modal:{call.object_id}" in owners and call.object_id not in self._seen_working:
                        self._seen_working.add(call.object_id)
                        self._start_failures[group.name] = 0  # this group's calls can start
                calls = [c for c in calls if not self._ended(group, c)]
                starting = sum(c.object_id not in self._seen_working for c in calls)
                # A live call that has worked and holds no lease now is between jobs: it takes
                # a waiting job within a poll, so a new (cold, paid) call is not spawned for it.
                between = sum(c.object_id in self._seen_working
                              and f"modal:{c.object_id}" not in owners for c in calls)
                depth = sum(self._queues[k].len(partition=self.run_id) for k in group.kinds)
                need = min(self.cap(group) - len(calls), depth - starting - between)
                if self.failure is not None or time.monotonic() < self._not_before[group.name]:
                    need = 0
                elif self._start_failures[group.name]:
                    need = min(need, 1)  # after a start failure, probe with one call at a time
                if need > 0:
                    fn = self._function(group)
                    args: tuple[Any, ...] = (self.config.modal.idle_seconds,
                                             self.config.backend.lease_seconds)
                    if self.run_id is not None:
                        args += (self.run_id,)
                    for _ in range(need):
                        calls.append(fn.spawn(*args))
                    self.spawned += need
                    log.info("spawned %d %s worker(s) for %d waiting job(s)", need, group.name,
                             depth)
                self._calls[group.name] = calls
                spawned[group.name] = max(need, 0)
            return spawned

    def check(self) -> None:
        """Raise when the run cannot go on (see `failure`): the executor calls this while it
        waits, so the run fails with the containers' error instead of waiting forever."""
        if self.failure is not None:
            raise CoralError(self.failure)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.scale()
            except Exception as exc:  # a transient Modal error must not end scaling for good
                log.warning("modal launcher: scaling failed: %s", one_line(exc))
            self._stop.wait(self.interval)

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="coral-modal-launcher",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop spawning; running workers finish their job and exit after idle_seconds."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def alive(self) -> int:
        with self._lock:
            return sum(not self._quietly_ended(c) for calls in self._calls.values() for c in calls)

    @staticmethod
    def _quietly_ended(call: Any) -> bool:
        try:
            call.get(timeout=0)
        except TimeoutError:
            return False
        except Exception:  # ended with an error: scale() counts and reports it
            return True
        return True


# ------------------------------------------------------------------------- a whole run on Modal


def modal_runs_dir(home: Home | None = None) -> Path:
    """Where this machine notes the runs it submitted to Modal (the runs themselves live on the
    Volume): `coral runs`, `coral status` and `coral resume` start here."""
    return (home or Home()).root / "modal-runs"


def modal_run_record(run_id: str, home: Home | None = None) -> dict[str, Any] | None:
    path = modal_runs_dir(home) / f"{run_id}.json"
    if not path.is_file():
        return None
    return dict(json.loads(path.read_text(encoding="utf-8")))


def list_modal_runs(home: Home | None = None) -> list[dict[str, Any]]:
    folder = modal_runs_dir(home)
    if not folder.is_dir():
        return []
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))]


def _note(record: dict[str, Any], home: Home | None) -> None:
    folder = modal_runs_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{record['run_id']}.json.tmp"
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, folder / f"{record['run_id']}.json")


def _shipped(config_path: str | Path, overrides: Sequence[str]) -> tuple[dict[str, Any], Config,
                                                                          str]:
    path = Path(config_path).resolve()
    data = apply_overrides(read_yaml(path), [*overrides, "backend.kind=modal"])
    config = validate_config(data, base_dir=path.parent, source=str(path))  # fail here, not there
    if REPO_ROOT not in path.parents:
        raise ConfigError(f"{path}: a config run on Modal must live inside the CORAL checkout "
                          f"({REPO_ROOT}), so its relative paths resolve there too")
    config_dir = str(PurePosixPath(CONTAINER_REPO) / path.parent.relative_to(REPO_ROOT).as_posix())
    return data, config, config_dir


def submit_run(
    config_path: str | Path, overrides: Sequence[str] = (), run_id: str | None = None, *,
    api: Any = None, home: Home | None = None,
) -> tuple[str, str]:
    """Start the orchestrator on Modal for this config; (run id, function call id).

    The run lives on Modal from here on: closing the laptop does not stop it. The config file
    must be inside the checkout, so its relative paths resolve the same way in the container.
    """
    data, config, config_dir = _shipped(config_path, overrides)
    run_id = run_id or new_run_id()
    api = modal_api(api)
    with modal_failures(app=config.modal.app_name, volume=config.modal.volume,
                        doing=f"submitting run {run_id}"):
        call = api.Function.from_name(config.modal.app_name, "orchestrator").spawn(
            yaml.safe_dump(data, sort_keys=False), config_dir, run_id
        )
    _note({"run_id": run_id, "config": str(Path(config_path).resolve()),
           "overrides": list(overrides), "app": config.modal.app_name,
           "volume": config.modal.volume, "calls": [call.object_id],
           "submitted": time.time()}, home)
    return run_id, call.object_id


def resume_on_modal(run_id: str, *, api: Any = None, home: Home | None = None) -> str:
    """`coral resume RUN_ID` for a Modal run: a new orchestrator call, which finds the run on the
    Volume and resumes it from its last checkpoint; its call id. Refused while the previous
    orchestrator call still runs (two would drive one run)."""
    record = modal_run_record(run_id, home)
    if record is None:
        raise CoralError(f"no Modal run {run_id!r} was submitted from here "
                         f"({modal_runs_dir(home)})")
    data, config, config_dir = _shipped(record["config"], record.get("overrides", []))
    api = modal_api(api)
    last = record["calls"][-1]
    # Failures of this client (token, network, quota) say nothing about the call: they must not
    # read as "it crashed", which would start a second orchestrator beside a live one.
    ours = (api.exception.AuthError, api.exception.ConnectionError, ConnectionError,
            api.exception.ResourceExhaustedError)
    with modal_failures(app=config.modal.app_name, volume=config.modal.volume,
                        doing=f"resuming run {run_id}"):
        try:
            api.FunctionCall.from_id(last).get(timeout=0)
        except TimeoutError:
            raise CoralError(f"run {run_id} is still running on Modal (orchestrator call "
                             f"{last}); nothing to resume") from None
        except api.exception.NotFoundError:
            pass  # Modal keeps call records for a limited time: long gone
        except (KeyboardInterrupt, *ours):
            raise
        except BaseException as exc:  # it crashed (with whatever its container raised): resume
            log.info("run %s: the last orchestrator call ended with %s", run_id, one_line(exc))
        if modal_run_status(run_id, api=api, home=home).get("state") == "finished":
            raise CoralError(f"run {run_id} already finished on Modal; nothing to resume")
        call = api.Function.from_name(config.modal.app_name, "orchestrator").spawn(
            yaml.safe_dump(data, sort_keys=False), config_dir, run_id
        )
    record["calls"].append(call.object_id)
    _note(record, home)
    return str(call.object_id)


def modal_run_status(run_id: str, *, api: Any = None, home: Home | None = None) -> dict[str, Any]:
    """A Modal run's status.json as committed on the Volume (at least once per generation)."""
    record = modal_run_record(run_id, home)
    if record is None:
        raise CoralError(f"no Modal run {run_id!r} was submitted from here")
    api = modal_api(api)
    with modal_failures(app=record["app"], volume=record["volume"],
                        doing=f"reading run {run_id}'s status"):
        try:
            # modal 1.6.4: read_file is a generator that raises the builtin FileNotFoundError
            # for a missing file (on the first chunk, not at the call).
            chunks = api.Volume.from_name(record["volume"]).read_file(
                f"runs/{run_id}/status.json")
            status = json.loads(b"".join(chunks))
        except FileNotFoundError:
            status = {"state": "submitted"}  # the orchestrator has not committed anything yet
    return {**status, "backend": "modal", "orchestrator_calls": record["calls"]}


def modal_run_checkpoints(run_id: str, *, api: Any = None, home: Home | None = None) -> list[int]:
    """The generations whose checkpoint a Modal run has committed to the Volume, in order: what a
    resume would start after (status.json says "running" until the run ends)."""
    record = modal_run_record(run_id, home)
    if record is None:
        raise CoralError(f"no Modal run {run_id!r} was submitted from here")
    api = modal_api(api)
    with modal_failures(app=record["app"], volume=record["volume"],
                        doing=f"listing run {run_id}'s checkpoints"):
        try:
            entries = api.Volume.from_name(record["volume"]).listdir(
                f"runs/{run_id}/checkpoints")
        except api.exception.NotFoundError:
            return []  # none committed yet
    names = [PurePosixPath(e.path).name for e in entries]
    return sorted(int(n[len(CHECKPOINT_PREFIX):-len(".json")]) for n in names
                  if n.startswith(CHECKPOINT_PREFIX) and n.endswith(".json"))


# ------------------------------------------------------------------------------------ status


def status(config: Config, *, api: Any = None) -> dict[str, Any]:
    """Queue depths (all partitions), the serving containers with their idle time, function
    stats, and the adapter cache, as plain data."""
    api = modal_api(api)
    app = config.modal.app_name
    with modal_failures(app=app, volume=config.modal.volume, doing="reading the app's status"):
        return _status(config, api, app)


def _status(config: Config, api: Any, app: str) -> dict[str, Any]:
    transport = ModalTransport(app, api=api)
    names = [job_queue(k) for k in JOB_KINDS] + [RESULTS_QUEUE, EVENTS_QUEUE]
    queues = {name: transport.queue(name).len(total=True) for name in names}
    now = time.time()
    leases = [v for _, v in transport.dict(LEASES_DICT).items() if isinstance(v, dict)]
    busy = sorted({str(v.get("owner")) for v in leases if float(v.get("expires", 0)) > now})
    workers: dict[str, Any] = {"busy": len(busy)}
    for group in GROUPS:
        if "." in group.function:
            continue  # Modal reports no container stats for a class
        stats = api.Function.from_name(app, group.function).get_current_stats()
        workers[group.function] = {"running": stats.num_total_runners, "backlog": stats.backlog}
    containers = []
    for worker_id, beat in transport.dict(CONTAINERS_DICT).items():
        if not isinstance(beat, dict):
            continue
        # Busy: it holds a live lease (renewed while a job runs). The record itself is written
        # at most every few seconds, so its own busy flag may lag a short job.
        is_busy = worker_id in busy
        idle = None if is_busy else now - float(beat.get("since", now))
        # A serving call exits after idle_seconds idle; a record older than that is a crash.
        stale = idle is not None and idle > config.modal.idle_seconds + 2 * HEARTBEAT_SLACK
        containers.append({"worker": worker_id, "group": beat.get("group"), "run": beat.get("run"),
                           "jobs": beat.get("jobs", 0), "busy": is_busy,
                           "idle_seconds": idle, "stale": stale,
                           "age_seconds": now - float(beat.get("started", now))})
    try:
        entries = api.Volume.from_name(config.modal.volume).listdir("adapters")
        # A trainer builds an adapter under a temporary name, then renames it into place.
        adapters = sum(not PurePosixPath(e.path).name.startswith(TEMP_PREFIX) for e in entries)
    except api.exception.NotFoundError:
        adapters = 0  # nothing trained yet: the folder does not exist
    done = sum(k.startswith("done:") for k in transport.dict(CLAIMS_DICT).keys())
    return {"app": app, "queues": queues, "workers": workers, "containers": containers,
            "cache": {"adapters": adapters, "done_markers": done}}
