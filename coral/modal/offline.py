"""The Modal app deployed on the Modal double: the same functions as coral/modal/app.py, with the
same bodies (coral/modal/runtime.py), containers as threads and the Volume in a local folder.

`coral validate` runs the modal backend here, and the tests run whole Modal runs here. What the
decorators in app.py declare (GPU, timeouts, block_network, ...) is checked by tests of app.py;
this module mirrors the wiring: which body each function runs, what it mounts, its container cap.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from coral.config import REPO_ROOT, Config
from coral.execution.jobs import BUILTIN_BODIES, Handler, HandlerOutput, JobBodies, WorkerContext
from coral.execution.messages import Job
from coral.home import Home
from coral.modal.constants import CONTAINER_REPO, EVALUATE_FUNCTION
from coral.modal.double import ModalDouble
from coral.modal.runtime import GenerateContainer, TrainContainer, evaluate, orchestrate, serve_tests


def local_path(container_path: str) -> str:
    """A path in the image (the checkout is /root there) as it is here, where REPO_ROOT is it."""
    if container_path == CONTAINER_REPO or container_path.startswith(CONTAINER_REPO + "/"):
        return str(REPO_ROOT) + container_path[len(CONTAINER_REPO):]
    return container_path


# Containers here are threads of one process, and torch's random generator and thread pool are
# per process: two jobs running at once would draw from one generator, which real containers
# (processes) never do. `one_job_at_a_time` runs jobs under this lock, for `coral validate`.
_JOBS = threading.Lock()


def _one_at_a_time(handler: Handler) -> Handler:
    def run(job: Job, ctx: WorkerContext) -> HandlerOutput:
        with _JOBS:
            return handler(job, ctx)

    return run


def deploy(
    api: ModalDouble, config: Config, *, bodies: JobBodies = BUILTIN_BODIES, preload: bool = True,
    network_blocked: bool = False, scaledown_window: float = 2.0,
    one_job_at_a_time: bool = False, launcher_interval: float = 2.0,
) -> None:
    """Register the app's functions for `config.modal` on `api` (which needs a volume_root).

    `bodies` replaces job bodies everywhere, as `coral run --handlers` does.
    `network_blocked` says whether `evaluate` may count on a network block it cannot have here;
    False (the truth on this machine) makes it insist on the sandbox's namespaces instead.
    `one_job_at_a_time`: see _JOBS. `launcher_interval`: seconds between the orchestrator's
    looks at its queues (Modal's 2 s; `coral validate` looks more often).
    """
    # The GPU containers take the spec, or (one job at a time) the table with each body wrapped.
    gpu_bodies: Any = bodies.spec
    if one_job_at_a_time:
        table = bodies.table()
        gpu_bodies = {kind: _one_at_a_time(table.get(kind)) for kind in ("train", "generate")}
    modal = config.modal
    app, volume, models = modal.app_name, modal.volume, modal.models_volume
    api.Volume.from_name(volume, create_if_missing=True).hydrate()  # lazy until used, as Modal's
    api.Volume.from_name(models, create_if_missing=True).hydrate()

    def home() -> Home:
        return Home(Path(api.Volume.from_name(volume).path))  # this container's mount

    def train(model: str) -> TrainContainer:
        return TrainContainer(model, app_name=app, volume_name=volume, api=api, home=home(),
                              handlers=gpu_bodies, preload=preload, models_volume_name=models)

    def generate(model: str) -> GenerateContainer:
        return GenerateContainer(model, app_name=app, volume_name=volume, api=api, home=home(),
                                 handlers=gpu_bodies, preload=preload, models_volume_name=models)

    def test_worker(idle_seconds: float, lease_seconds: float,
                    run_id: str | None = None) -> dict[str, int]:
        return serve_tests(app_name=app, idle_seconds=idle_seconds, lease_seconds=lease_seconds,
                           run_id=run_id, api=api)

    def evaluate_job(job: dict[str, Any]) -> str:
        return evaluate(job, network_blocked=network_blocked, bodies=bodies)

    def orchestrator(config_yaml: str, config_dir: str, run_id: str) -> dict[str, Any]:
        return orchestrate(config_yaml, local_path(config_dir), run_id, volume_name=volume, api=api,
                           home=home(), bodies=bodies, model_paths="local",
                           models_volume_name=models, launcher_interval=launcher_interval)

    gpu: dict[str, Any] = dict(max_containers=modal.max_containers,
                               scaledown_window=scaledown_window, volumes=(volume, models),
                               retries=modal.retries)
    cpu: dict[str, Any] = dict(max_containers=modal.max_containers_test,
                               scaledown_window=scaledown_window, retries=modal.retries)
    api.deployed.register_cls(app, "TrainWorker", train, **gpu)
    api.deployed.register_cls(app, "GenerateWorker", generate, **gpu)
    api.deployed.register(app, "test_worker", test_worker, **cpu)
    api.deployed.register(app, EVALUATE_FUNCTION, evaluate_job, restrict_output=True, **cpu)
    api.deployed.register(app, "orchestrator", orchestrator, volumes=(volume, models),
                          retries=modal.orchestrator_retries)
