"""The cross-process Modal double's cloud: an app deployed on the DoubleServer runs its
orchestrator and workers in the server's process, and a client in this process reaches them only
through the Modal API (Function.spawn, FunctionCall.from_id, queues, dicts, the Volume)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_modal_ingest import APP, FAKES, SMOKE, from_volume

from coral.home import Home
from coral.modal.launcher import submit_run
from coral.testing.modal_double import DoubleServer


def test_a_run_submitted_from_this_process_runs_in_the_servers_process(tmp_path: Path) -> None:
    volumes = tmp_path / "volumes"
    with DoubleServer() as server:
        server.deploy(SMOKE, ["backend.kind=modal"], volumes, FAKES, scaledown_window=0.5,
                      launcher_interval=0.2)
        api = server.client(volume_root=volumes)
        with pytest.raises(api.exception.NotFoundError, match="not found"):
            api.Function.from_name(APP, "no_such_function").hydrate()
        run_id, call_id = submit_run(SMOKE, ["backend.kind=modal"], api=api, home=Home(tmp_path / "home"))
        result = api.FunctionCall.from_id(call_id).get(timeout=120)
        assert isinstance(result, dict)
        rows = from_volume(api, run_id)
        assert rows["genomes"], "the run's genomes reached the Volume this process reads"
        with pytest.raises(api.exception.NotFoundError):
            api.FunctionCall.from_id("fc-none").get(timeout=0)


def test_coral_run_reaches_the_double_only_through_its_explicit_test_hook(tmp_path: Path) -> None:
    """`coral run --backend modal --modal-double HANDLE` submits to the double's cloud; a bad
    handle is one line; without the option the real Modal is asked (no token here: `modal setup`)."""
    from conftest import run_coral

    volumes = tmp_path / "volumes"
    env = {"CORAL_HOME": str(tmp_path / "home"), "HOME": str(tmp_path)}
    with DoubleServer() as server:
        server.deploy(SMOKE, ["backend.kind=modal"], volumes, FAKES, scaledown_window=0.5,
                      launcher_interval=0.2)
        handle = server.write_handle(tmp_path / "double.json", volumes)
        assert handle.stat().st_mode & 0o077 == 0  # it holds the authkey
        proc = run_coral("run", str(SMOKE), "--backend", "modal", "--modal-double", str(handle), env=env)
        assert proc.returncode == 0, proc.stderr
        run_id = proc.stdout.split()[0]
        api = server.client(volume_root=volumes)
        record = json.loads((tmp_path / "home" / "modal-runs" / f"{run_id}.json").read_text())
        assert api.FunctionCall.from_id(record["calls"][0]).get(timeout=120)["state"] == "finished"
        assert from_volume(api, run_id)["genomes"]

    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    proc = run_coral("run", str(SMOKE), "--backend", "modal", "--modal-double", str(broken), env=env)
    assert proc.returncode == 2 and "not a Modal double handle" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    proc = run_coral("run", str(SMOKE), "--backend", "modal", env=env)
    assert proc.returncode == 2 and "modal setup" in proc.stderr, proc.stderr
    # The dashboard refuses a bad handle in one line before it serves anything.
    proc = run_coral("dashboard", "--port", "1", "--modal-double", str(broken), env=env, timeout=60)
    assert proc.returncode == 2 and "not a Modal double handle" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for command in ("run", "dashboard"):  # marked as what it is
        assert "TEST HOOK" in run_coral(command, "--help", env=env).stdout
