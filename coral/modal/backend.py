"""The Modal implementation of the Backend protocol (coral/run/backend.py).

Transport: Modal queues and dicts of the deployed app (`{app}-{name}`), which also carry the
control dict. Executor: the shared job queues, one partition per run. Workers: Modal function
calls spawned by ModalLauncher. The run's orchestrator runs on Modal (`runs_here` False): `coral
run` submits it, and the run's folder lives on the app's Volume, read through the Modal API.
The registry (coral/services/backends.py) makes one for `backend.kind: modal`.

`api` is the `modal` module (None: imported once credentials exist) or the Modal double;
`model_paths` and `interval` are the launcher's (the double runs in this machine's file system).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any, cast

from coral.config import Config
from coral.errors import CoralError
from coral.execution.executor import Executor, QueueExecutor
from coral.execution.transport.base import Transport
from coral.execution.transport.modal_backend import ModalTransport, check_credentials, modal_api
from coral.execution.workers import WorkerLauncher
from coral.home import Home
from coral.modal.errors import modal_failures
from coral.modal.launcher import (
    ModalLauncher,
    list_modal_runs,
    modal_run_record,
    modal_run_status,
    modal_runs_dir,
    resume_on_modal,
    submit_run,
)
from coral.run.backend import WORKER_KINDS, RunContext, RunFile, RunListing


def _copied(home: Home, run_id: str) -> bool:
    """Whether the ingestor's copy of the run (coral/store/mirror.py) holds its config: from then
    on the run is found by its config, as a local run is (coral/services/backends.py)."""
    return (home.run_dir(run_id) / "config.yaml").is_file()


class ModalBackend:
    runs_here = False
    kind = "modal"

    def __init__(self, api: Any = None, *, model_paths: str = "container",
                 interval: float = 2.0) -> None:
        self.api = api
        self.model_paths = model_paths
        self.interval = interval

    def preflight(self, config: Config) -> None:
        if self.api is None:  # the real Modal: a missing token is one line naming `modal setup`
            check_credentials()

    def open_transport(self, home: Home, config: Config | None = None) -> Transport:
        return ModalTransport(config.modal.app_name if config is not None else "coral", api=self.api)

    def execution(self, transport: Transport, run_id: str, config: Config,
                  context: RunContext) -> tuple[Executor, WorkerLauncher | None]:
        # Modal runs share the app's job queues: each keeps its jobs in its own partition. Job
        # bodies are the deployed functions' (coral/modal/offline.py deploys stand-ins).
        executor = QueueExecutor(transport, run_id, config.backend, job_partition=run_id)
        launcher = ModalLauncher(cast(ModalTransport, transport), config, kinds=list(WORKER_KINDS),
                                 run_id=run_id, model_paths=self.model_paths, interval=self.interval)
        executor.add_health_check(launcher.check)  # workers that keep failing to start end the run
        return executor, launcher

    def submit(self, config_path: str | os.PathLike, overrides: Sequence[str], run_id: str,
               home: Home) -> str:
        run_id, call_id = submit_run(Path(config_path), list(overrides), run_id, api=self.api, home=home)
        return (f"run {run_id} started on Modal (orchestrator call {call_id}); "
                "watch it with `coral modal status`")

    def resume(self, run_id: str, home: Home) -> str:
        call = resume_on_modal(run_id, api=self.api, home=home)
        return (f"run {run_id} resumes on Modal from its last checkpoint (orchestrator call "
                f"{call}); follow it with `coral status {run_id}`")

    def remote_runs(self, home: Home) -> list[RunListing]:
        # Their state lives on the Volume (`coral status RUN` reads it), so none here.
        return [RunListing(m["run_id"], self.kind, "on-modal",
                           {"app": m["app"], "orchestrator_calls": m["calls"]})
                for m in list_modal_runs(home) if not _copied(home, m["run_id"])]

    def knows_run(self, home: Home, run_id: str) -> bool:
        """A run submitted to Modal from here, with no local copy of its config yet (the folder
        may hold only the detached launcher's log; docs/modal.md, "Resume")."""
        return modal_run_record(run_id, home) is not None and not _copied(home, run_id)

    def run_status(self, home: Home, run_id: str) -> dict[str, Any]:
        return modal_run_status(run_id, api=self.api, home=home)

    def read_run_file(self, home: Home, run_id: str, name: str) -> bytes | None:
        record = self._record(home, run_id)
        api = modal_api(self.api)
        with modal_failures(app=record["app"], volume=record["volume"],
                            doing=f"reading runs/{run_id}/{name} from the Volume"):
            try:
                return b"".join(api.Volume.from_name(record["volume"]).read_file(f"runs/{run_id}/{name}"))
            except (api.exception.NotFoundError, FileNotFoundError):  # modal 1.6.4 raises the builtin
                return None

    def list_run_files(self, home: Home, run_id: str, folder: str) -> dict[str, RunFile] | None:
        record = self._record(home, run_id)
        api = modal_api(self.api)
        where = f"runs/{run_id}/{folder}".rstrip("/")
        with modal_failures(app=record["app"], volume=record["volume"],
                            doing=f"listing {where} on the Volume"):
            try:
                entries = api.Volume.from_name(record["volume"]).listdir(where)
            except api.exception.NotFoundError:  # not committed yet
                return None
        return {PurePosixPath(e.path).name: RunFile(int(e.size), float(e.mtime))
                for e in entries if getattr(e.type, "name", "") == "FILE"}  # modal.types.FileEntryType

    def followed_runs(self, home: Home) -> list[str]:
        """Every run submitted to Modal from here (its folder is on the Volume; the ingestor's
        copy in `home`, if any, is only a copy)."""
        return [m["run_id"] for m in list_modal_runs(home)]

    def run_transport(self, home: Home, run_id: str) -> Transport:
        return ModalTransport(self._record(home, run_id)["app"], api=self.api)

    def forget_run(self, home: Home, run_id: str) -> None:
        """The note that this home submitted the run goes: its copy here is not fetched again
        (the run's folder stays on the Volume)."""
        (modal_runs_dir(home) / f"{run_id}.json").unlink(missing_ok=True)

    @staticmethod
    def _record(home: Home, run_id: str) -> dict[str, Any]:
        record = modal_run_record(run_id, home)
        if record is None:
            raise CoralError(f"no Modal run {run_id!r} was submitted from here")
        return record

