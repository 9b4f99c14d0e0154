"""What runs inside Modal containers: the bodies that coral/modal/app.py's functions call.

The app's functions hold no logic; everything here also runs offline against the Modal double
(`api=ModalDouble(...)`), which is how the tests exercise it.

The Volume holds CORAL_HOME (adapters, runs, the Hugging Face cache). Containers see each
other's writes only after the writer commits and the reader reloads, so every job runs between
a reload and a commit.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from coral.config import ModelConfig, validate_config
from coral.execution.job_bodies import _base
from coral.execution.jobs import Handlers, WorkerContext
from coral.execution.messages import Job
from coral.execution.transport.modal_backend import ModalTransport, modal_api
from coral.execution.workers import Worker
from coral.modal.launcher import ModalLauncher
from coral.run.lifecycle import run_from_config

log = logging.getLogger("coral.modal")

def container_worker_id(api: Any) -> str:
    """'modal:FUNCTION_CALL_ID': the launcher matches lease owners to the calls it spawned."""
    call_id = api.current_function_call_id()
    return f"modal:{call_id or socket.gethostname()}"


def volume_synced(handler: Callable[[Job, WorkerContext], dict], volume: Any) -> Callable:
    """Reload before the job (see others' adapters), commit after (publish ours), even on error:
    a half-written temporary folder is harmless, a published adapter must not wait."""

    def run(job: Job, ctx: WorkerContext) -> dict:
        volume.reload()
        try:
            return handler(job, ctx)
        finally:
            volume.commit()

    return run


class ContainerWorker:
    """One container's worker. Built once per container (in @modal.enter for the generation
    class), so what it loads into its WorkerContext (the base model) serves every job after.

    Without `volume_name` (the sandboxed test worker) no Volume is touched. `handlers` names
    extra job bodies ("module:attr"), as `coral worker --handlers` does.
    """

    def __init__(
        self, kinds: Sequence[str], *, app_name: str, volume_name: str | None = None,
        handlers: str | None = None, worker_id: str | None = None, api: Any = None,
    ) -> None:
        self.kinds = list(kinds)
        self.api = modal_api(api)
        self.transport = ModalTransport(app_name, api=self.api)
        base = Handlers.from_spec(handlers)
        self.volume = self.api.Volume.from_name(volume_name) if volume_name else None
        self.handlers = base
        if self.volume is not None:
            self.handlers = Handlers(
                {kind: volume_synced(base.get(kind), self.volume) for kind in self.kinds}
            )
        self.worker_id = worker_id or container_worker_id(self.api)
        self.ctx = WorkerContext(self.transport, worker_id=self.worker_id)

    def preload(self, model_json: str) -> None:
        """Load the base model into this container's context now, not at the first job.

        Its files may be downloaded into the Volume's Hugging Face cache on the way; the commit
        shares them with the other containers.
        """

        if self.volume is not None:
            self.volume.reload()
        _base(self.ctx, ModelConfig.model_validate_json(model_json))
        if self.volume is not None:
            self.volume.commit()

    def serve(
        self, *, idle_seconds: float, lease_seconds: float, accept_for: float | None = None,
    ) -> dict[str, int]:
        """Run the worker loop until `idle_seconds` pass without work; stop taking jobs
        `accept_for` seconds in (so a job begun near the function's timeout is not killed)."""
        stop = threading.Event()
        worker = Worker(self.transport, self.kinds, handlers=self.handlers,
                        lease_seconds=lease_seconds, idle_exit=idle_seconds,
                        worker_id=self.worker_id, stop=stop)
        self.ctx.claim_seconds = lease_seconds
        worker.ctx = self.ctx  # keep what this container has loaded
        timer = threading.Timer(accept_for, stop.set) if accept_for else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            return dataclasses.asdict(worker.run())
        finally:
            if timer is not None:
                timer.cancel()


def serve(
    kinds: Sequence[str], *, app_name: str, idle_seconds: float, lease_seconds: float,
    volume_name: str | None = None, accept_for: float | None = None,
    handlers: str | None = None, worker_id: str | None = None, api: Any = None,
) -> dict[str, int]:
    """A fresh ContainerWorker's loop: the body of the train and test worker functions."""
    worker = ContainerWorker(kinds, app_name=app_name, volume_name=volume_name,
                             handlers=handlers, worker_id=worker_id, api=api)
    return worker.serve(idle_seconds=idle_seconds, lease_seconds=lease_seconds,
                        accept_for=accept_for)


def orchestrate(
    config_yaml: str, config_dir: str, run_id: str, *, volume_name: str, api: Any = None,
) -> dict[str, Any]:
    """A whole run on Modal: validate the shipped config, then `coral.run.lifecycle.run_from_config`.

    `config_dir` is the config file's folder as seen in the container, so relative paths in it
    resolve as they did on the laptop.
    """

    config = validate_config(
        yaml.safe_load(config_yaml) or {}, base_dir=Path(config_dir), source="config sent to Modal"
    )
    api = modal_api(api)
    volume = api.Volume.from_name(volume_name)
    volume.reload()

    try:
        def launcher(transport: Any, config: Any) -> ModalLauncher:
            return ModalLauncher(transport, config, kinds=["train", "generate", "test"])

        return dataclasses.asdict(run_from_config(config, run_id=run_id, launcher=launcher))
    finally:
        volume.commit()
