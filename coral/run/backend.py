"""The backend seam: where a run's jobs go, who runs them, how it is controlled and found.

A `Backend` is everything the layers above the engine ask about *where* a run executes:
- transport: the queues and dicts between executor and workers (`open_transport`), which is
  also the run's control channel (coral/run/control.py puts requests in its control dict);
- the executor and the worker launcher of one run (`execution`);
- run status and listing, and access to a run's folder (local disk here, a Modal Volume there);
- whether the run's orchestrator runs in this process (`runs_here`) or is submitted elsewhere.

Two implementations: `LocalBackend` here (serial and local workers share one local home and its
SQLite transport; serial runs jobs in-process, local starts a worker pool) and the Modal one in
coral/modal/backend.py. Which one serves a `backend.kind` is decided in ONE place, the registry
coral/services/backends.py; this layer never imports coral.modal (docs/architecture.md), it
receives a Backend inside a `RunContext`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from coral.config import Config
from coral.errors import ConfigError, CoralError
from coral.execution.executor import Executor, QueueExecutor, SerialExecutor
from coral.execution.jobs import BUILTIN_BODIES, JobBodies
from coral.execution.transport.base import Transport
from coral.execution.transport.local import LocalTransport
from coral.execution.workers import LocalWorkerPool, WorkerLauncher, local_worker_cap
from coral.home import Home
from coral.run.registry import run_status

# What a run reports while it runs: (kind, info), e.g. ("generation", {...}); see coral/run/engine.py.
ProgressSink = Callable[[str, dict], None]

WORKER_KINDS = ("train", "generate", "test")

# A run whose folder lives elsewhere (a Modal run's, on its Volume, committed once a generation)
# also publishes its small files that change while it runs, through its transport: dict LIVE_DICT,
# key `RUN_ID/NAME`, value the file's text, at most every LIVE_EVERY seconds. The ingestor's copy
# of the folder (coral/store/mirror.py) takes them from there, so the dashboard follows the run
# as it happens; the Volume's copy is what counts once the dict entry is gone.
LIVE_DICT = "live"
LIVE_FILES = ("config.yaml", "status.json", "progress.json")
LIVE_EVERY = 0.5


def live_key(run_id: str, name: str) -> str:
    return f"{run_id}/{name}"


@dataclass(frozen=True)
class RunFile:
    """A file of a run's folder as its backend lists it: enough to tell that it changed."""

    size: int
    mtime: float


@dataclass(frozen=True)
class RunListing:
    """One line of `coral runs` for a run that has no folder in this home (a remote run)."""

    run_id: str
    backend: str
    state: str
    detail: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """Where a run executes. Implementations: LocalBackend (serial, local), ModalBackend."""

    @property
    def kind(self) -> str:
        """The `backend.kind` value this backend serves (shown, recorded; never compared)."""
        ...

    @property
    def runs_here(self) -> bool:
        """True: `coral run` drives the engine in this process and the config's local paths are
        this machine's. False: the orchestrator is submitted elsewhere (`submit`)."""
        ...

    def preflight(self, config: Config) -> None:
        """What this backend can check before a run is registered (one line if wrong)."""
        ...

    def open_transport(self, home: Home, config: Config | None = None) -> Transport:
        """The run's queues and dicts: its jobs, results, events and control channel."""
        ...

    def execution(self, transport: Transport, run_id: str, config: Config,
                  context: RunContext) -> tuple[Executor, WorkerLauncher | None]:
        """The run's executor and its worker launcher (None when the executor runs jobs itself),
        job bodies and home from `context`; the launcher's health check wired into the executor;
        the caller starts the launcher."""
        ...

    def submit(self, config_path: str | os.PathLike, overrides: Sequence[str], run_id: str,
               home: Home) -> str:
        """Start a run's orchestrator where the backend runs it; the line to show. Only for a
        backend that does not run here."""
        ...

    def resume(self, run_id: str, home: Home) -> str:
        """Resume a run that lives on this backend (not in `home`) there; the line to show."""
        ...

    def remote_runs(self, home: Home) -> list[RunListing]:
        """Runs submitted from this home that have no folder in it."""
        ...

    def knows_run(self, home: Home, run_id: str) -> bool:
        """Whether `run_id` is a run of this backend that has no folder in `home`."""
        ...

    def run_status(self, home: Home, run_id: str) -> dict[str, Any]:
        """The run's status (status.json plus what the backend knows), wherever it lives."""
        ...

    def read_run_file(self, home: Home, run_id: str, name: str) -> bytes | None:
        """A file of the run's folder (`name` relative to it), None when it does not exist."""
        ...

    def list_run_files(self, home: Home, run_id: str, folder: str) -> dict[str, RunFile] | None:
        """The files directly in a folder of the run's folder ("" for the folder itself) by name;
        None when that folder does not exist (yet)."""
        ...

    def followed_runs(self, home: Home) -> list[str]:
        """Runs submitted from `home` whose folder lives on this backend: the ingestor keeps a
        copy of each in `home` (coral/store/mirror.py). Empty for a backend that runs here."""
        ...

    def run_transport(self, home: Home, run_id: str) -> Transport:
        """The transport of run `run_id` (its events partition, its control dict), known from
        the run alone, without its config."""
        ...

    def forget_run(self, home: Home, run_id: str) -> None:
        """Stop following a run submitted from `home` (deleted here; the backend keeps its own
        copy). Nothing for a backend that runs here."""
        ...


@dataclass(frozen=True)
class RunContext:
    """The run-wide settings that are not science (those are the Config): where the run executes,
    its home, test job bodies, torch threads, and who hears its progress. One object instead of
    options threaded through every function of the run's life."""

    backend: Backend
    home: Home = field(default_factory=Home)
    bodies: JobBodies = BUILTIN_BODIES  # stand-in job bodies (tests, benchmarks); default: the built-ins
    threads: int | None = None  # torch threads of the engine; None: derived from the workers
    progress: ProgressSink | None = None

    def report(self, kind: str, info: dict) -> None:
        if self.progress is not None:
            self.progress(kind, info)


class LocalBackend:
    """Runs on this machine, in CORAL_HOME: the SQLite transport, the run folder on disk.

    `pool=False` is `backend.kind: serial` (jobs run in the engine's process); `pool=True` is
    `local` (a pool of worker processes). Both share one home and one transport.
    """

    runs_here = True

    def __init__(self, pool: bool) -> None:
        self.pool = pool

    @property
    def kind(self) -> str:
        return "local" if self.pool else "serial"

    def preflight(self, config: Config) -> None:
        if self.pool and config.backend.workers > local_worker_cap():
            raise ConfigError(f"backend.workers={config.backend.workers}: at most {local_worker_cap()} local "
                              f"workers on this machine (2 x {os.cpu_count()} CPU cores, at least 4)")

    def open_transport(self, home: Home, config: Config | None = None) -> Transport:
        # Serial runs jobs in-process but still needs a dict for adapter claims and a queue for
        # events, so it uses the local transport too.
        return LocalTransport(home.queue_db)

    def execution(self, transport: Transport, run_id: str, config: Config,
                  context: RunContext) -> tuple[Executor, WorkerLauncher | None]:
        home = context.home
        if not self.pool:
            return SerialExecutor(transport, run_id, config.backend, home=home,
                                  handlers=context.bodies.table()), None
        executor = QueueExecutor(transport, run_id, config.backend)
        pool = LocalWorkerPool(home, config.backend.workers, list(WORKER_KINDS), bodies=context.bodies,
                               lease_seconds=config.backend.lease_seconds,
                               log_dir=home.run_dir(run_id) / "workers", run_id=run_id)
        executor.add_health_check(pool.check)  # dead workers are replaced, or the run ends
        return executor, pool

    def submit(self, config_path: str | os.PathLike, overrides: Sequence[str], run_id: str,
               home: Home) -> str:
        raise CoralError(f"backend {self.kind!r} runs here: `coral run` drives them in this process")

    def resume(self, run_id: str, home: Home) -> str:
        raise CoralError(f"no run {run_id!r} in {home.runs}")

    def remote_runs(self, home: Home) -> list[RunListing]:
        return []  # every local run has its folder in the home: `list_runs` lists them

    def knows_run(self, home: Home, run_id: str) -> bool:
        return False

    def run_status(self, home: Home, run_id: str) -> dict[str, Any]:
        return run_status(home, run_id)

    def read_run_file(self, home: Home, run_id: str, name: str) -> bytes | None:
        path = home.run_dir(run_id) / name
        return path.read_bytes() if path.is_file() else None

    def list_run_files(self, home: Home, run_id: str, folder: str) -> dict[str, RunFile] | None:
        path = home.run_dir(run_id) / folder
        if not path.is_dir():
            return None
        stats = {p.name: p.stat() for p in path.iterdir() if p.is_file()}
        return {name: RunFile(st.st_size, st.st_mtime) for name, st in stats.items()}

    def followed_runs(self, home: Home) -> list[str]:
        return []  # a local run's folder is in the home already

    def run_transport(self, home: Home, run_id: str) -> Transport:
        return self.open_transport(home)  # one transport for every run of the home

    def forget_run(self, home: Home, run_id: str) -> None:
        return None  # deleting its folder is all there is
