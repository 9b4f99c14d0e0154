"""The backend registry: the ONE place that turns `backend.kind` into a Backend.

Everything else asks the Backend it is given (coral/run/backend.py): the CLI, the dashboard
services, the run lifecycle, the ingestor and the Modal orchestrator. tests/services/test_backend_seam.py
fails on a comparison of `backend.kind` anywhere else. It lives in the services layer because it
must import both implementations: the local one (coral.run) and the Modal one (coral.modal).
"""

from __future__ import annotations

from typing import Any, get_args

from coral.config import BackendConfig, Config
from coral.errors import ConfigError, CoralError
from coral.execution.jobs import JobBodies
from coral.home import Home
from coral.modal.backend import ModalBackend
from coral.modal.double import connect_handle
from coral.run.backend import Backend, LocalBackend, ProgressSink, RunContext
from coral.run.registry import run_config

BACKEND_KINDS: tuple[str, ...] = get_args(BackendConfig.model_fields["kind"].annotation)

# The Modal API that `backend_for("modal")` hands its ModalBackend when no `api` is given: None is
# the real `modal` module (imported once credentials exist). It is a value, as `api=` is: tests
# set it to the Modal double to drive the dashboard's services against a Modal run offline.
MODAL_API: Any = None


def use_modal_double(handle: str) -> None:
    """A test hook (`--modal-double HANDLE` of `coral run` and `coral dashboard`): this process's
    Modal is the cross-process Modal double whose handle file is `handle`, in place of Modal."""
    global MODAL_API
    MODAL_API = connect_handle(handle)


def backend_for(kind: str, *, api: Any = None) -> Backend:
    """The backend that serves `backend.kind` `kind`; `api` is the Modal API to use (the Modal
    double in tests and `coral validate`; None: the real `modal`)."""
    if kind == "serial":
        return LocalBackend(pool=False)
    if kind == "local":
        return LocalBackend(pool=True)
    if kind == "modal":
        return ModalBackend(api if api is not None else MODAL_API)
    raise ConfigError(f"unknown backend {kind!r} (known: {', '.join(BACKEND_KINDS)})")


def sizes_its_pool(kind: str) -> bool:
    """Whether `backend.workers` sizes a pool this machine starts (the Launch page's Workers
    field); Modal scales its own workers, serial has none."""
    return kind == "local"


def config_backend(config: Config) -> Backend:
    return backend_for(config.backend.kind)


def run_context(config: Config, home: Home | None = None, *, handlers: str | None = None,
                threads: int | None = None, progress: ProgressSink | None = None) -> RunContext:
    """The context a run of `config` executes in, on the backend its `backend.kind` names."""
    return RunContext(config_backend(config), home or Home(), JobBodies(handlers), threads, progress)


def remote_backends() -> list[Backend]:
    """Backends whose runs may have no folder in this home (submitted from here, living there)."""
    return [backend_for(kind) for kind in BACKEND_KINDS if not backend_for(kind).runs_here]


def run_backend(home: Home, run_id: str) -> tuple[Backend, Config | None]:
    """The backend that holds run `run_id`, with the run's config when its folder is in `home`
    (a run driven here, or a Modal run's folder seen from its orchestrator); a run submitted
    from here to a remote backend has none here."""
    if (home.run_dir(run_id) / "config.yaml").exists():
        config = run_config(home, run_id)
        return config_backend(config), config
    for backend in remote_backends():
        if backend.knows_run(home, run_id):
            return backend, None
    raise CoralError(f"no run {run_id!r} in {home.runs}")
