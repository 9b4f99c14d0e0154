"""Against real Modal, only when MODAL_TOKEN_ID and MODAL_TOKEN_SECRET are set as pytest starts.

The contract, worker and executor suites also gain a `modal-live` backend then (see
coral.testing.transports.py); this file checks the Modal-only facts on the real service.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path

import pytest

from coral.execution.transport.base import Transport
from coral.testing.transports import _LIVE_TOKEN, make_modal_live

pytestmark = pytest.mark.skipif(
    not all(_LIVE_TOKEN),
    reason="no Modal token: run with MODAL_TOKEN_ID and MODAL_TOKEN_SECRET set (`modal token new` "
           "prints them), e.g. `MODAL_TOKEN_ID=... MODAL_TOKEN_SECRET=... pytest "
           "tests/modal/test_modal_live.py`; it deploys an app of its own and deletes what it made")


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Transport]:
    transport = make_modal_live(tmp_path)
    yield transport
    transport.close()  # deletes the queues and dicts it made


def test_live_round_trip_claim_and_partitions(live: Transport) -> None:
    q = live.queue("jobs-echo")
    q.put_many(["a", "b"], partition="run-live")
    assert q.len(partition="run-live") == 2 and q.len() == 0
    assert q.get_many(5, partition="run-live") == ["a", "b"]
    assert q.get(block=False, partition="run-live") is None
    with pytest.raises(queue.Empty):
        q.get(timeout=1, partition="run-live")
    claims = live.dict("claims")
    assert claims.put("claim:k:0", {"owner": "me"}, skip_if_exists=True) is True
    assert claims.put("claim:k:0", {"owner": "you"}, skip_if_exists=True) is False
    assert claims.get("claim:k:0") == {"owner": "me"}


def live_names(app: str) -> dict[str, list[str]]:
    """Everything the live run makes on Modal, by kind, so cleanup deletes exactly that."""
    return {"app": [app], "volume": [f"{app}-home", f"{app}-models"],
            "queue": [f"{app}-{n}" for n in ("jobs-train", "jobs-generate", "jobs-test",
                                             "jobs-echo", "results", "events")],
            "dict": [f"{app}-{n}" for n in ("leases", "claims", "control", "holds",
                                            "containers")]}


def cleanup_commands(app: str) -> list[list[str]]:
    """`modal app stop` asks for confirmation on a terminal and aborts without one: --yes."""
    import sys

    names = live_names(app)
    commands = [[sys.executable, "-m", "modal", "app", "stop", "--yes", app]]
    for kind in ("volume", "queue", "dict"):
        commands += [[sys.executable, "-m", "modal", kind, "delete", "--yes", name]
                     for name in names[kind]]
    return commands


def test_live_deploy_a_smoke_generation_and_resume(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The first real run, on CPU-cheap settings: deploy an app of its own (own app name and
    Volumes), run the smoke config for two generations, stop the orchestrator once generation
    0's checkpoint is on the Volume, `coral resume` it, and see it finish. Everything it made is
    deleted after."""
    import secrets
    import subprocess
    import sys
    import time

    import modal

    from coral.config import REPO_ROOT
    from coral.modal.launcher import (
        modal_run_checkpoints,
        modal_run_status,
        resume_on_modal,
        submit_run,
    )

    monkeypatch.setenv("MODAL_TOKEN_ID", _LIVE_TOKEN[0] or "")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", _LIVE_TOKEN[1] or "")
    monkeypatch.setenv("CORAL_HOME", str(tmp_path / "laptop"))
    app = f"coral-live-{secrets.token_hex(4)}"
    overrides = [f"modal.app_name={app}", f"modal.volume={app}-home",
                 f"modal.models_volume={app}-models", "modal.gpu_train=T4",
                 "modal.gpu_generate=T4", "modal.max_containers=2", "modal.idle_seconds=10",
                 "generations=2"]
    config = REPO_ROOT / "configs" / "smoke.yaml"
    deploy = [sys.executable, "-m", "coral", "modal", "deploy", str(config)]
    for item in overrides:
        deploy += ["--set", item]
    try:
        subprocess.run(deploy, check=True, timeout=1800)
        run_id, first = submit_run(config, overrides)
        deadline = time.monotonic() + 1800
        # status.json says "running" until the end; the checkpoint is what a resume starts after
        while 0 not in modal_run_checkpoints(run_id):
            assert time.monotonic() < deadline, "generation 0's checkpoint never reached the Volume"
            time.sleep(10)
        modal.FunctionCall.from_id(first).cancel(terminate_containers=True)
        time.sleep(10)
        second = resume_on_modal(run_id)
        assert modal.FunctionCall.from_id(second).get(timeout=1800)["state"] == "finished"
        status = modal_run_status(run_id)
        assert status["state"] == "finished" and status["orchestrator_calls"] == [first, second]
        assert modal_run_checkpoints(run_id) == [0, 1]
    finally:
        for command in cleanup_commands(app):
            subprocess.run(command, check=False, timeout=120, stdin=subprocess.DEVNULL)
