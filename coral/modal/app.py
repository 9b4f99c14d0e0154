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
from typing import Any

import modal

from coral.config import REPO_ROOT, ModalConfig, load_config
from coral.errors import ConfigError
from coral.modal.constants import CONFIG_ENV, CONTAINER_HOME, CONTAINER_REPO, SECTION_ENV
from coral.modal.launcher import DEFAULT_CONFIG
from coral.modal.runtime import ContainerWorker, orchestrate, serve

# Runtime dependencies, pinned exactly as in constraints.txt (a test checks they agree).
PINNED = [
    "numpy==2.4.6",
    "pydantic==2.14.4",
    "pydantic_core==2.50.5",
    "PyYAML==6.0.4",
    "torch==2.13.0",
    "transformers==5.24.0",
    "peft==0.21.2",
    "accelerate==1.15.0",
    "safetensors==0.8.0",
    "tokenizers==0.23.3",
    "huggingface_hub==2.4.0",
    "ruff==0.17.6",
    "bandit==1.9.4",
]


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

image = (
    modal.Image.debian_slim(python_version="3.11")
    .pip_install(*PINNED)
    .env({
        SECTION_ENV: CONFIG.model_dump_json(),
        "CORAL_HOME": CONTAINER_HOME,
        "HF_HOME": f"{CONTAINER_HOME}/models/huggingface",  # models download once, to the Volume
        "PYTHONUNBUFFERED": "1",
    })
    .add_local_python_source("coral")
)
for _folder in ("data", "configs"):  # problems, the tiny model, configs: same layout as here
    if (REPO_ROOT / _folder).is_dir():
        image = image.add_local_dir(
            REPO_ROOT / _folder, f"{CONTAINER_REPO}/{_folder}", ignore=["**/__pycache__"]
        )

volume = modal.Volume.from_name(CONFIG.volume, create_if_missing=True)
VOLUMES: dict[str, Any] = {CONTAINER_HOME: volume}
# Gated models need a token: only the GPU workers and the orchestrator get secrets. The test
# worker runs untrusted candidate code, so it gets neither secrets nor the Volume.
secrets = [modal.Secret.from_name(name) for name in CONFIG.secrets]

app = modal.App(CONFIG.app_name, image=image, include_source=False)

WORKER_OPTIONS: dict[str, Any] = dict(
    retries=CONFIG.retries,
    max_containers=CONFIG.max_containers,
    scaledown_window=CONFIG.idle_seconds,
)


def _accept_for(timeout: int) -> float:
    # A worker takes new jobs only in the first half of its call, so each job it starts has at
    # least half the timeout to finish before Modal stops the container.
    return timeout / 2


@app.function(gpu=CONFIG.gpu_train, timeout=CONFIG.timeout_train, volumes=VOLUMES,
              secrets=secrets, **WORKER_OPTIONS)
def train_worker(idle_seconds: float, lease_seconds: float) -> dict[str, int]:
    return serve(("train",), app_name=CONFIG.app_name, volume_name=CONFIG.volume,
                 idle_seconds=idle_seconds, lease_seconds=lease_seconds,
                 accept_for=_accept_for(CONFIG.timeout_train))


@app.cls(gpu=CONFIG.gpu_generate, timeout=CONFIG.timeout_generate, volumes=VOLUMES,
         secrets=secrets, **WORKER_OPTIONS)
class GenerateWorker:
    # The run's `model` section as JSON: one container pool per base model.
    model: str = modal.parameter()

    @modal.enter()
    def load(self) -> None:
        self.worker = ContainerWorker(("generate",), app_name=CONFIG.app_name,
                                      volume_name=CONFIG.volume)
        self.worker.preload(self.model)

    @modal.method()
    def serve(self, idle_seconds: float, lease_seconds: float) -> dict[str, int]:
        return self.worker.serve(idle_seconds=idle_seconds, lease_seconds=lease_seconds,
                                 accept_for=_accept_for(CONFIG.timeout_generate))


@app.function(cpu=2.0, timeout=CONFIG.timeout_test, **WORKER_OPTIONS)
def test_worker(idle_seconds: float, lease_seconds: float) -> dict[str, int]:
    return serve(("test", "echo"), app_name=CONFIG.app_name, volume_name=None,
                 idle_seconds=idle_seconds, lease_seconds=lease_seconds,
                 accept_for=_accept_for(CONFIG.timeout_test))


# No Modal retries: a crashed run resumes with `coral resume RUN_ID`, not by starting again.
@app.function(timeout=CONFIG.timeout_run, volumes=VOLUMES, secrets=secrets, retries=0)
def orchestrator(config_yaml: str, config_dir: str, run_id: str) -> dict[str, Any]:
    return orchestrate(config_yaml, config_dir, run_id, volume_name=CONFIG.volume)
