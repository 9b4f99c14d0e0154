"""coral/modal/app.py: imports offline, and every function's settings come from the config.

modal 1.6.4 keeps a function's GPU and volumes in `_Function._spec`, and its timeout, retry
policy, container cap and scaledown window only as variables of the `_load` closure that builds
the FunctionCreate request at deploy time; that is where these tests read them.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from modal._partial_function import _find_partial_methods_for_user_cls, _PartialFunctionFlags
from modal._utils.async_utils import synchronizer
from modal_proto import api_pb2

import coral.modal.app
from coral.config import ModalConfig
from coral.errors import ConfigError
from coral.modal.constants import CONFIG_ENV, CONTAINER_HOME, MODELS_HOME, SECTION_ENV

REPO = Path(__file__).resolve().parents[2]
OFFLINE = "Secret.from_dict([HF_HUB_OFFLINE])"  # GPU workers load the prefetched model offline

CUSTOM = ModalConfig(
    app_name="coral-test", volume="vol-test", gpu_train="A100-80GB", gpu_generate="L40S",
    timeout_train=1234, timeout_generate=567, timeout_test=89, timeout_run=4321, retries=3,
    max_containers=5, max_containers_test=7, idle_seconds=42, secrets=["huggingface"],
    orchestrator_retries=4,
)


@pytest.fixture
def app_with(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Re-import coral.modal.app with a given `modal` section; restore the default after."""

    def load(section: ModalConfig) -> Any:
        monkeypatch.setenv(SECTION_ENV, section.model_dump_json())
        return importlib.reload(coral.modal.app)

    yield load
    monkeypatch.delenv(SECTION_ENV, raising=False)
    importlib.reload(coral.modal.app)


def settings(module: Any, name: str) -> dict[str, Any]:
    """What Modal will deploy for function `name` ('GenerateWorker.*' for the class)."""
    fn = synchronizer._translate_in(module.app)._local_state.functions[name]
    load = fn._load
    cells = dict(zip(load.__code__.co_freevars, (c.cell_contents for c in load.__closure__),
                     strict=True))
    policy = cells["retry_policy"]
    return {
        "gpu": fn._spec.gpus,
        "timeout": cells["timeout"],
        "retries": policy.retries if policy is not None else None,
        "max_containers": cells["max_containers"],
        "scaledown_window": cells["scaledown_window"],
        "volumes": {path: synchronizer._translate_in(v)._name
                    for path, v in fn._spec.volumes.items()},
        "secrets": [m.group(1) if (m := re.search(r"from_name\('([^']+)'\)", s._rep)) else s._rep
                    for s in fn._spec.secrets],
        "block_network": cells["block_network"],
        "restrict_modal_access": cells["restrict_modal_access"],
        "slim": fn._spec.image is synchronizer._translate_in(module.test_image),
        # CBOR only: what the caller deserializes cannot be a pickle (DataFormat 4 is CBOR)
        "cbor_only": list(cells["supported_output_formats"]) == [api_pb2.DATA_FORMAT_CBOR],
    }


def test_every_function_takes_its_settings_from_the_config(app_with: Any) -> None:
    module = app_with(CUSTOM)
    assert synchronizer._translate_in(module.app).name == "coral-test"
    volume = {CONTAINER_HOME: "vol-test", MODELS_HOME: "coral-models"}
    # A worker's loop exits after idle_seconds; its container then lingers Modal's minimum only.
    open_ = {"block_network": False, "restrict_modal_access": False, "cbor_only": False}
    gpu = {"retries": 3, "max_containers": 5, "scaledown_window": 2, "slim": False, **open_}
    cpu = {"retries": 3, "max_containers": 7, "scaledown_window": 2, "slim": True}
    assert settings(module, "TrainWorker.*") == {
        "gpu": "A100-80GB", "timeout": 1234, "volumes": volume, "secrets": ["huggingface", OFFLINE],
        **gpu}
    assert settings(module, "GenerateWorker.*") == {
        "gpu": "L40S", "timeout": 567, "volumes": volume, "secrets": ["huggingface", OFFLINE], **gpu}
    # The test worker feeds candidates to `evaluate`: neither gets secrets, a Volume or a GPU,
    # and `evaluate`, where candidate code runs, has no network and no access to Modal objects.
    assert settings(module, "test_worker") == {
        "gpu": None, "timeout": 89, "volumes": {}, "secrets": [], **cpu, **open_}
    assert settings(module, "evaluate") == {
        "gpu": None, "timeout": 89, "volumes": {}, "secrets": [], **cpu, "scaledown_window": 42,
        "block_network": True, "restrict_modal_access": True, "cbor_only": True}
    assert settings(module, "orchestrator") == {
        "gpu": None, "timeout": 4321, "retries": 4, "max_containers": None,
        "scaledown_window": None, "volumes": volume, "secrets": ["huggingface"], "slim": False,
        **open_}


def test_the_default_import_deploys_the_resolved_config() -> None:
    config = coral.modal.app.app_config()
    got = settings(coral.modal.app, "TrainWorker.*")
    assert (got["gpu"], got["timeout"], got["max_containers"]) == (
        config.gpu_train, config.timeout_train, config.max_containers)
    assert got["volumes"] == {CONTAINER_HOME: config.volume, MODELS_HOME: config.models_volume}


def test_the_gpu_workers_load_their_model_once_per_container() -> None:
    for worker in (coral.modal.app.TrainWorker, coral.modal.app.GenerateWorker):
        cls = synchronizer._translate_in(worker)._user_cls
        enter = _find_partial_methods_for_user_cls(cls, _PartialFunctionFlags.ENTER_POST_SNAPSHOT)
        methods = _find_partial_methods_for_user_cls(cls, _PartialFunctionFlags.CALLABLE_INTERFACE)
        assert list(enter) == ["load"]
        assert list(methods) == ["serve"]
        assert cls.__annotations__ == {"model": str}  # the class parameter: one pool per model


def test_config_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "modal.yaml"
    path.write_text("modal:\n  app_name: from-file\n  gpu_train: L4\n")
    monkeypatch.delenv(SECTION_ENV, raising=False)
    monkeypatch.setenv(CONFIG_ENV, str(path))
    assert coral.modal.app.app_config().app_name == "from-file"
    monkeypatch.setenv(SECTION_ENV, ModalConfig(app_name="from-env").model_dump_json())
    assert coral.modal.app.app_config().app_name == "from-env"  # the baked section wins
    monkeypatch.setenv(SECTION_ENV, '{"app_name": "x", "gpu": "H100"}')
    with pytest.raises(ConfigError, match=f"^{SECTION_ENV}: not a valid modal section"):
        coral.modal.app.app_config()
    monkeypatch.delenv(SECTION_ENV)
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="config file not found"):
        coral.modal.app.app_config()


def test_bad_modal_settings_are_refused_before_deploying() -> None:
    for bad in ({"gpu_train": "H100 x2"}, {"idle_seconds": 7200}, {"timeout_train": 90000},
                {"app_name": "a" * 41}, {"secrets": ["no spaces"]}):
        with pytest.raises(ValueError):
            ModalConfig(**bad)


def test_the_image_installs_what_constraints_pin() -> None:
    pinned = set()
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            pinned.add(line.split("==")[0].strip().lower().replace("_", "-"))
    packages = coral.modal.app.GPU_PACKAGES + coral.modal.app.TEST_PACKAGES
    assert {p.lower().replace("_", "-") for p in packages} <= pinned  # pip -c fixes each
    assert "torch" not in coral.modal.app.TEST_PACKAGES  # the test image stays slim


_NO_NETWORK = """
import sys
def refuse(event, args):
    if event in ("socket.connect", "socket.getaddrinfo"):
        raise RuntimeError(f"network use at import: {event} {args!r}")
sys.addaudithook(refuse)
import coral.modal.app as m
print(m.app.name, sorted(m.app.registered_functions))
"""


def test_import_works_offline_without_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update(HOME=str(tmp_path), PYTHONWARNINGS="ignore",
               **{SECTION_ENV: ModalConfig(app_name="offline").model_dump_json()})
    proc = subprocess.run([sys.executable, "-c", _NO_NETWORK], capture_output=True, text=True,
                          env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split(maxsplit=1) == [
        "offline",
        json.dumps(["GenerateWorker.*", "TrainWorker.*", "evaluate", "orchestrator",
                    "test_worker"])
        .replace('"', "'") + "\n"]
