"""The Modal app: `coral modal deploy` (or `modal deploy -m coral.modal.app`).

Functions here only wire Modal to coral bodies (coral/modal/runtime.py); they hold no logic.
Decorators run at import, so settings come from a config read at import time:
  1. CORAL_MODAL_SECTION: the `modal` section as JSON (baked into the image, so a container
     imports this module with the settings it was deployed with);
  2. CORAL_MODAL_CONFIG: path of a CORAL config file (what `coral modal deploy CONFIG` sets);
  3. configs/modal-codellama.yaml in the checkout, if present;
  4. the ModalConfig() defaults.
Importing this module contacts nothing and needs no token.
"""

# No `from __future__ import annotations`: Modal reads class parameter types at runtime.
import os
from pathlib import PurePosixPath
from typing import Any

import modal

from coral.config import REPO_ROOT, ModalConfig, load_config
from coral.errors import ConfigError
from coral.modal.constants import CONFIG_ENV, CONTAINER_HOME, CONTAINER_REPO, MODELS_HOME, SECTION_ENV
from coral.modal.launcher import DEFAULT_CONFIG
from coral.modal.runtime import GenerateContainer, TrainContainer, orchestrate, serve_tests
from coral.modal.runtime import evaluate as evaluate_job

# Runtime dependencies by name; their versions, and those of everything they pull in, come from
# constraints.txt (pip -c), so the image installs what the checkout was tested with. A test checks
# every name here is pinned there.
GPU_PACKAGES = ["numpy", "pydantic", "PyYAML", "torch", "transformers", "peft", "accelerate",
                "safetensors", "tokenizers", "huggingface_hub", "ruff", "bandit"]
# Test workers and `evaluate` score candidates: no torch, no CUDA, a fraction of the image.
TEST_PACKAGES = ["numpy", "pydantic", "PyYAML", "ruff", "bandit"]
CONSTRAINTS = f"{CONTAINER_REPO}/constraints.txt"


def app_config() -> ModalConfig:
    """The `modal` section this import deploys with (see the module docstring for the order)."""
    section = os.environ.get(SECTION_ENV)
    if section:
        try:
            return ModalConfig.model_validate_json(section)
        except ValueError as exc:
            raise ConfigError(f"{SECTION_ENV}: not a valid modal section: {exc}") from None
    path = os.environ.get(CONFIG_ENV)
    if path:
        return load_config(path).modal
    if DEFAULT_CONFIG.is_file():
        return load_config(DEFAULT_CONFIG).modal
    return ModalConfig()


CONFIG = app_config()

def _image(packages: list[str]) -> modal.Image:
    image = (
        modal.Image.debian_slim(python_version="3.11")
        .add_local_file(REPO_ROOT / "constraints.txt", CONSTRAINTS, copy=True)
        .pip_install(*packages, extra_options=f"-c {CONSTRAINTS}")
        .env({
            SECTION_ENV: CONFIG.model_dump_json(),
            "CORAL_HOME": CONTAINER_HOME,
            "HF_HOME": f"{MODELS_HOME}/huggingface",  # models download once, to their Volume
            "PYTHONUNBUFFERED": "1",
        })
        .add_local_python_source("coral")
    )
    for folder in ("data", "configs"):  # problems, the tiny model, configs: same layout as here
        if (REPO_ROOT / folder).is_dir():
            image = image.add_local_dir(
                REPO_ROOT / folder, f"{CONTAINER_REPO}/{folder}", ignore=["**/__pycache__"]
            )
    return image


image = _image(GPU_PACKAGES)
test_image = _image(TEST_PACKAGES)

volume = modal.Volume.from_name(CONFIG.volume, create_if_missing=True)
models = modal.Volume.from_name(CONFIG.models_volume, create_if_missing=True)
# Spelled as Modal's decorators take it (a dict's key and value types must match exactly).
VOLUMES: dict[str | PurePosixPath, modal.Volume | modal.CloudBucketMount] = {
    CONTAINER_HOME: volume, MODELS_HOME: models,
}
# Gated models need a token: only the GPU workers and the orchestrator get secrets. Untrusted
# candidate code runs in `evaluate`, which gets no secrets, no Volume, no network and no access
# to the app's queues and dicts; the test worker that feeds it gets no secrets and no Volume.
secrets = [modal.Secret.from_name(name) for name in CONFIG.secrets]

app = modal.App(CONFIG.app_name, image=image, include_source=False)

# The worker loop exits after idle_seconds without a job; the container then lingers only
# Modal's minimum scaledown window (idle GPU time is paid for, docs/modal.md).
SCALEDOWN_SECONDS = 2
GPU_OPTIONS: dict[str, Any] = dict(
    retries=CONFIG.retries,
    max_containers=CONFIG.max_containers,
    scaledown_window=SCALEDOWN_SECONDS,
)
TEST_OPTIONS: dict[str, Any] = dict(
    image=test_image,
    retries=CONFIG.retries,
    max_containers=CONFIG.max_containers_test,
    scaledown_window=SCALEDOWN_SECONDS,
)


def _accept_for(timeout: int) -> float:
    # A worker takes new jobs only in the first half of its call, so each job it starts has at
    # least half the timeout to finish before Modal stops the container.
    return timeout / 2


@app.cls(gpu=CONFIG.gpu_train, timeout=CONFIG.timeout_train, volumes=VOLUMES,
         secrets=secrets, **GPU_OPTIONS)
class TrainWorker:
    # The run's `model` section as JSON: one container pool per base model, loaded once each.
    model: str = modal.parameter()

    @modal.enter()
    def load(self) -> None:
        self.body = TrainContainer(self.model, app_name=CONFIG.app_name, volume_name=CONFIG.volume,
                                   models_volume_name=CONFIG.models_volume,
                                   accept_for=_accept_for(CONFIG.timeout_train))

    @modal.method()
    def serve(self, idle_seconds: float, lease_seconds: float,
              run_id: str | None = None) -> dict[str, int]:
        return self.body.serve(idle_seconds, lease_seconds, run_id)


@app.cls(gpu=CONFIG.gpu_generate, timeout=CONFIG.timeout_generate, volumes=VOLUMES,
         secrets=secrets, **GPU_OPTIONS)
class GenerateWorker:
    model: str = modal.parameter()

    @modal.enter()
    def load(self) -> None:
        self.body = GenerateContainer(self.model, app_name=CONFIG.app_name,
                                      volume_name=CONFIG.volume,
                                      models_volume_name=CONFIG.models_volume,
                                      accept_for=_accept_for(CONFIG.timeout_generate))

    @modal.method()
    def serve(self, idle_seconds: float, lease_seconds: float,
              run_id: str | None = None) -> dict[str, int]:
        return self.body.serve(idle_seconds, lease_seconds, run_id)


@app.function(cpu=1.0, timeout=CONFIG.timeout_test, **TEST_OPTIONS)
def test_worker(idle_seconds: float, lease_seconds: float,
                run_id: str | None = None) -> dict[str, int]:
    return serve_tests(app_name=CONFIG.app_name, idle_seconds=idle_seconds,
                       lease_seconds=lease_seconds, run_id=run_id,
                       accept_for=_accept_for(CONFIG.timeout_test))


# No loop keeps `evaluate` warm between a generation's test jobs: its containers idle for
# idle_seconds instead (CPU time, cheap next to a cold start per test).
@app.function(cpu=2.0, timeout=CONFIG.timeout_test, block_network=True,
              restrict_modal_access=True, **{**TEST_OPTIONS, "scaledown_window": CONFIG.idle_seconds})
def evaluate(job: dict[str, Any]) -> dict[str, Any]:
    return evaluate_job(job, network_blocked=True)


# A retry after a crash resumes the run from its last checkpoint (orchestrate sees it on the
# Volume), so a transient failure of the orchestrator's container does not end the run.
@app.function(timeout=CONFIG.timeout_run, volumes=VOLUMES, secrets=secrets,
              retries=CONFIG.orchestrator_retries)
def orchestrator(config_yaml: str, config_dir: str, run_id: str) -> dict[str, Any]:
    return orchestrate(config_yaml, config_dir, run_id, volume_name=CONFIG.volume)
