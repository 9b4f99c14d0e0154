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

pytestmark = pytest.mark.skipif(not all(_LIVE_TOKEN), reason="no Modal token in the environment")


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


def test_live_deploy_a_smoke_generation_and_resume(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole path on real Modal, on CPU-cheap settings: deploy an app of its own, run the
    smoke config for two generations, kill the orchestrator once generation 0 is committed to
    the Volume, `coral resume` it, and see it finish. Everything it made is deleted after."""
    import secrets
    import subprocess
    import sys
    import time

    import modal

    from coral.config import REPO_ROOT
    from coral.modal.launcher import modal_run_status, resume_on_modal, submit_run

    monkeypatch.setenv("MODAL_TOKEN_ID", _LIVE_TOKEN[0] or "")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", _LIVE_TOKEN[1] or "")
    monkeypatch.setenv("CORAL_HOME", str(tmp_path / "laptop"))
    app = f"coral-live-{secrets.token_hex(4)}"
    overrides = [f"modal.app_name={app}", f"modal.volume={app}-home", "modal.gpu_train=T4",
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
        while modal_run_status(run_id).get("generation", 0) < 1:  # generation 0 committed
            assert time.monotonic() < deadline, "generation 0 never reached the Volume"
            time.sleep(10)
        modal.FunctionCall.from_id(first).cancel(terminate_containers=True)
        time.sleep(10)
        second = resume_on_modal(run_id)
        assert modal.FunctionCall.from_id(second).get(timeout=1800)["state"] == "finished"
        status = modal_run_status(run_id)
        assert status["state"] == "finished" and status["orchestrator_calls"] == [first, second]
    finally:
        subprocess.run([sys.executable, "-m", "modal", "app", "stop", app], check=False, timeout=120)
        subprocess.run([sys.executable, "-m", "modal", "volume", "delete", "--yes", f"{app}-home"], check=False,
                       timeout=120)
        for name in ("jobs-train", "jobs-generate", "jobs-test", "jobs-echo", "results",
                     "events"):
            subprocess.run([sys.executable, "-m", "modal", "queue", "delete", "--yes", f"{app}-{name}"], check=False,
                           timeout=120)
        for name in ("leases", "claims", "control", "holds", "containers"):
            subprocess.run([sys.executable, "-m", "modal", "dict", "delete", "--yes", f"{app}-{name}"], check=False,
                           timeout=120)
