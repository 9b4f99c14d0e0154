"""The cross-process Modal double's cloud: an app deployed on the DoubleServer runs its
orchestrator and workers in the server's process, and a client in this process reaches them only
through the Modal API (Function.spawn, FunctionCall.from_id, queues, dicts, the Volume)."""

from __future__ import annotations

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
