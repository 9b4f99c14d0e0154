"""Issue 27 item 1: a Modal run is a run like any other in the dashboard. Its services (what the
pages call: the ingestor, the Live view, control, queue depths, the Runs listing, exports) drive a
run whose orchestrator runs on the Modal double, reached only through the Modal API."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_modal_ingest import APP, FAKES, SMOKE, VOLUME, from_volume, wait_for
from test_store_support import store_rows

from coral import analysis
from coral.analysis.lineage import best_genome_id, lineage, missing_parents
from coral.config import load_config
from coral.execution.jobs import JobBodies
from coral.home import Home, new_run_id
from coral.modal.double import ModalDouble
from coral.modal.launcher import modal_run_record
from coral.modal.offline import deploy, local_path
from coral.modal.runtime import orchestrate
from coral.services import backends
from coral.services.backends import config_backend
from coral.services.dashboard import delete_run, export_parquet, queue_depths, request_control, start_ingestor
from coral.services.live import live_view


class Holds:
    """Where the orchestrator waits for the test: at generation 0's first scored genome, and at
    the first job report of generation 1."""

    def __init__(self) -> None:
        self.scored, self.after_scored = threading.Event(), threading.Event()
        self.second, self.after_second = threading.Event(), threading.Event()

    def release(self) -> None:
        self.after_scored.set()
        self.after_second.set()


def modal_app(tmp_path: Path, holds: Holds) -> ModalDouble:
    api = ModalDouble(volume_root=tmp_path / "volumes")
    deploy(api, load_config(SMOKE, ["backend.kind=modal"]), bodies=JobBodies(FAKES), preload=False,
           network_blocked=True, scaledown_window=0.5)

    def orchestrator(config_yaml: str, config_dir: str, run_id: str) -> dict[str, Any]:
        container = Home(api.Volume.from_name(VOLUME).path)  # this container's view

        def progress(kind: str, info: dict) -> None:
            if kind != "job":
                return
            record = json.loads((container.run_dir(run_id) / "progress.json").read_text())
            if record["generation"] == 0 and record["genomes"] and not holds.scored.is_set():
                holds.scored.set()
                holds.after_scored.wait(120)
            elif record["generation"] == 1 and not holds.second.is_set():
                holds.second.set()
                holds.after_second.wait(120)

        return orchestrate(config_yaml, local_path(config_dir), run_id, volume_name=VOLUME, api=api,
                           home=container, bodies=JobBodies(FAKES), progress=progress, model_paths="local")

    api.deployed.register(APP, "orchestrator", orchestrator, volumes=(VOLUME,))
    return api


def stage_counts(run_id: str, home: Home) -> dict[str, tuple[int, int]]:
    view = live_view(run_id, home)
    return {s: (c.get("done", 0), c.get("failed", 0)) for s, c in (view.stages or {}).items()}


def test_a_modal_run_is_followed_paused_continued_and_stopped_from_the_dashboard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    holds = Holds()
    api = modal_app(tmp_path, holds)
    monkeypatch.setattr(backends, "MODAL_API", api)  # the registry's Modal is the double
    home = Home(tmp_path / "laptop").ensure()
    backend = config_backend(load_config(SMOKE, ["backend.kind=modal"]))
    run_id = new_run_id()
    line = backend.submit(SMOKE, ["backend.kind=modal"], run_id, home)  # what Launch's `coral run` does
    assert run_id in line
    record = modal_run_record(run_id, home)
    assert record is not None  # noted in CORAL_HOME/modal-runs/: the ingestor follows it
    call = api.FunctionCall.from_id(record["calls"][0])
    ingestor = start_ingestor(home)  # the dashboard's one writer, following Modal runs too
    try:
        assert holds.scored.wait(120), "no genome scored in generation 0"
        wait_for(lambda: live_view(run_id, home).genomes, 15, "a genome's point on the Live view")
        view = live_view(run_id, home)
        assert view.info.state == "running" and view.info.backend == "modal"
        assert view.running_generation == 0 and view.stages["test"]["total"] > 0
        assert queue_depths(run_id, home)["test"] >= 0  # asked through the run's backend

        request_control(run_id, "pause", home)
        holds.after_scored.set()
        wait_for(lambda: live_view(run_id, home).info.state == "paused", 30, "the paused state")
        # Jobs already running when the pause landed finish (docs/dashboard.md); then all is still.
        wait_for(lambda: not any(c.get("running") for c in (live_view(run_id, home).stages or {}).values()),
                 30, "the jobs running at the pause to finish")
        time.sleep(1.5)  # their last counts reach the copy (published every 0.5 s)
        before = stage_counts(run_id, home)
        time.sleep(4)
        assert stage_counts(run_id, home) == before  # held: nothing of the run starts or ends
        request_control(run_id, "continue", home)
        assert holds.second.wait(60), "the run never reached generation 1 after continue"
        wait_for(lambda: live_view(run_id, home).running_generation == 1, 15, "generation 1 on the Live view")
        request_control(run_id, "stop", home)
        holds.after_second.set()
        assert call.get(timeout=120)["state"] == "stopped"

        expected = from_volume(api, run_id)
        assert expected["events"] and expected["genomes"]

        def stored() -> dict[str, list[tuple]]:
            with ingestor._lock:  # the writer's connection: read between its cycles
                return store_rows(ingestor.store.con, run_id)

        # Events arrive live; genome details with the checkpoints copied from the Volume.
        wait_for(lambda: stored() == expected, 30, "the store's rows to equal the Volume's log")
        wait_for(lambda: live_view(run_id, home).info.state == "stopped", 30, "the stopped state")
        ingestor.snapshot()
        runs = analysis.list_runs(home).set_index("run_id")
        assert runs.loc[run_id, "backend"] == "modal" and runs.loc[run_id, "state"] == "stopped"
        assert missing_parents(run_id, home) == {}  # Lineage: every parent is a genome of the run
        assert not lineage(run_id, best_genome_id(run_id, home), home).empty
        assert not analysis.pareto(run_id, 0, ["bugfix", "style"], home).empty  # Pareto
        exported = export_parquet(run_id, tmp_path / "parquet", home)
        assert any(Path(exported).glob("*.parquet"))

        delete_run(run_id, home)  # the Runs page's delete: the copy goes and is not fetched again
        cycles = ingestor.status.cycles
        wait_for(lambda: ingestor.status.cycles > cycles + 8, 30, "ingest cycles after the delete")
        assert not home.run_dir(run_id).exists() and modal_run_record(run_id, home) is None
        assert run_id not in set(analysis.list_runs(home)["run_id"])
    finally:
        holds.release()
        ingestor.stop()


def test_resume_of_a_copied_modal_run_goes_to_modal_never_runs_the_copy_here(tmp_path: Path) -> None:
    """`coral resume RUN` where the folder is the ingestor's copy of a Modal run: the request goes
    to Modal (here: no token, so the one line naming `modal setup`), and nothing runs locally."""
    from conftest import run_coral

    from coral.modal.backend import ModalBackend
    from coral.modal.launcher import submit_run
    from coral.store.ingest import Ingestor

    holds = Holds()
    holds.release()
    api = modal_app(tmp_path, holds)
    home = Home(tmp_path / "laptop").ensure()
    run_id, call = submit_run(SMOKE, [], api=api, home=home)
    api.FunctionCall.from_id(call).get(timeout=120)
    with Ingestor(home, None, remote=[ModalBackend(api)], db_path=":memory:", mirror_every=0.0) as ingestor:
        for _ in range(3):
            ingestor.run_once()
    before = sorted(p.name for p in home.run_dir(run_id).rglob("*"))
    proc = run_coral("resume", run_id, env={"CORAL_HOME": str(home.root), "HOME": str(tmp_path)})
    assert proc.returncode == 2 and "modal setup" in proc.stderr, proc.stderr
    assert sorted(p.name for p in home.run_dir(run_id).rglob("*")) == before  # the copy untouched
