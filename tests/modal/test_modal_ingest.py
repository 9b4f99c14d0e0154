"""Issue 27 item 2: a Modal run's results stream into DuckDB, and whatever the ingestor missed
(the laptop closed, the dashboard restarted, the events partition expired) is backfilled from the
run's event log on the Volume. On the Modal double, with the app's real orchestrator body."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_store_support import copy_runs, store_rows

from coral.config import REPO_ROOT, load_config
from coral.execution.jobs import EVENTS_QUEUE, JobBodies
from coral.execution.transport.modal_backend import ModalTransport
from coral.home import Home
from coral.modal.backend import ModalBackend
from coral.modal.double import ModalDouble
from coral.modal.launcher import modal_run_record, submit_run
from coral.modal.offline import deploy, local_path
from coral.modal.runtime import orchestrate
from coral.run.events import read_events
from coral.store.ingest import Ingestor
from coral.store.mirror import Mirror

APP = "coral"
VOLUME = "coral-home"
SMOKE = REPO_ROOT / "configs" / "smoke.yaml"
FAKES = "coral.testing.fakes:HANDLERS"


def held_after_generation_0(tmp_path: Path, mid: bool = False) -> tuple[ModalDouble, threading.Event,
                                                                       threading.Event]:
    """The app on a double with stand-in job bodies; its orchestrator waits after generation 0
    (checkpoint committed) until `go` is set, and sets `reached` when it gets there. `mid`: it
    waits instead inside generation 0, once a genome is scored (nothing committed since start)."""
    api = ModalDouble(volume_root=tmp_path / "volumes")
    config = load_config(SMOKE, ["backend.kind=modal"])
    deploy(api, config, bodies=JobBodies(FAKES), preload=False, network_blocked=True, scaledown_window=0.5)
    reached, go = threading.Event(), threading.Event()

    def orchestrator(config_yaml: str, config_dir: str, run_id: str) -> dict[str, Any]:
        def progress(kind: str, info: dict) -> None:
            if reached.is_set():
                return
            if mid and kind == "job":
                container_home = Home(api.Volume.from_name(VOLUME).path)  # this container's view
                scored = json.loads((container_home.run_dir(run_id) / "progress.json").read_text())["genomes"]
                if not scored:
                    return
            elif mid or kind != "generation" or info["generation"] != 0:
                return
            reached.set()
            go.wait(120)

        return orchestrate(config_yaml, local_path(config_dir), run_id, volume_name=VOLUME, api=api,
                           home=Home(api.Volume.from_name(VOLUME).path), bodies=JobBodies(FAKES),
                           progress=progress, model_paths="local")

    api.deployed.register(APP, "orchestrator", orchestrator, volumes=(VOLUME,))
    return api, reached, go


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def from_volume(api: ModalDouble, run_id: str) -> dict[str, list[tuple]]:
    """The store's rows rebuilt from the run's folder on the double's Volume alone."""
    volume_home = Home(api.Volume.from_name(VOLUME).path)
    with Ingestor(volume_home, None, db_path=":memory:") as rebuilt:
        rebuilt.run_once()
        return store_rows(rebuilt.store.con, run_id)


@pytest.mark.parametrize("partition", ["kept", "expired"])
def test_a_modal_run_stopped_ingesting_mid_run_is_complete_after_a_restart(tmp_path: Path,
                                                                          partition: str) -> None:
    api, reached, go = held_after_generation_0(tmp_path)
    laptop = Home(tmp_path / "laptop")
    run_id, call = submit_run(SMOKE, [], api=api, home=laptop)
    assert not laptop.run_dir(run_id).exists()  # the run's folder is on the Volume

    # The dashboard is open while generation 0 runs: events arrive live, through the partition.
    first = Ingestor(laptop, None, remote=[ModalBackend(api)], interval=0.1, mirror_every=0.3,
                     snapshot_every=0.2).start()
    try:
        assert reached.wait(120), "the orchestrator never finished generation 0"
        wait_for(lambda: first.status.live > 0, 30, "live events from the partition")
        wait_for(lambda: laptop.run_config(run_id).is_file(), 30, "the copy of the run's config")
    finally:
        first.stop()  # the laptop closes, mid-run
    assert laptop.run_dir(run_id).is_dir()
    stored_before = first.status.events

    if partition == "expired":  # nothing left in the partition: only the Volume can fill the gap
        transport = ModalTransport(APP, api=api)
        while transport.queue(EVENTS_QUEUE).get_many(1000, block=False, partition=run_id):
            pass
    go.set()
    assert api.FunctionCall.from_id(call).get(timeout=180)["state"] == "finished"

    volume_log = list(read_events(Path(api.Volume.from_name(VOLUME).path) / "runs" / run_id / "events"))
    assert 0 < stored_before < len(volume_log)  # it really stopped mid-run
    second = Ingestor(laptop, None, remote=[ModalBackend(api)], mirror_every=0.0)
    try:
        for _ in range(20):  # the copy settles in a few cycles; then nothing changes
            second.run_once()
            if second.store.last_seqs().get(run_id) == volume_log[-1].seq:
                break
        con = second.store.con
        seqs = [r[0] for r in con.execute("SELECT seq FROM events WHERE run_id = ? ORDER BY seq",
                                          [run_id]).fetchall()]
        assert seqs == list(range(len(volume_log)))  # nothing lost, nothing twice
        assert [e.seq for e in volume_log] == seqs
        assert store_rows(con, run_id) == from_volume(api, run_id)
        state = con.execute("SELECT state, generations_done FROM runs WHERE run_id = ?", [run_id]).fetchone()
        assert state == ("finished", 2)
        genomes = con.execute("SELECT count(*) FROM genomes WHERE run_id = ?", [run_id]).fetchone()
        assert genomes is not None and genomes[0] > 0  # genome details come from the copied checkpoints
    finally:
        second.stop()
    assert modal_run_record(run_id, laptop) is not None


def test_the_copy_of_a_finished_run_settles_and_is_not_fetched_again(tmp_path: Path) -> None:
    api, reached, go = held_after_generation_0(tmp_path)
    go.set()
    laptop = Home(tmp_path / "laptop")
    run_id, call = submit_run(SMOKE, [], api=api, home=laptop)
    assert api.FunctionCall.from_id(call).get(timeout=180)["state"] == "finished"
    backend = ModalBackend(api)
    mirror = Mirror(laptop, [backend], every=0.0)
    assert list(mirror.runs()) == [run_id]
    assert mirror.sync(backend, run_id) > 0
    assert mirror.sync(backend, run_id) == 0 and mirror.copies[run_id].settled
    assert not mirror.due(run_id)  # a settled run is looked at once a minute, not every cycle
    volume = Path(api.Volume.from_name(VOLUME).path) / "runs" / run_id
    for name in ("config.yaml", "status.json", "events", "checkpoints"):
        there, here = volume / name, laptop.run_dir(run_id) / name
        if there.is_dir():
            assert sorted(p.name for p in here.iterdir()) == sorted(p.name for p in there.iterdir())
            assert all((here / p.name).read_bytes() == p.read_bytes() for p in there.iterdir())
        else:
            assert here.read_bytes() == there.read_bytes()


def test_a_modal_run_is_followed_as_it_runs_before_anything_is_committed(tmp_path: Path) -> None:
    """State, stage totals and a genome's point reach the laptop's copy during generation 0,
    through the run's live dict, while the Volume holds nothing of it but the orchestrator's
    record; then the run is found by its copied config, as a local run is."""
    api, reached, go = held_after_generation_0(tmp_path, mid=True)
    laptop = Home(tmp_path / "laptop")
    run_id, call = submit_run(SMOKE, [], api=api, home=laptop)
    backend = ModalBackend(api)
    assert backend.knows_run(laptop, run_id)
    ingestor = Ingestor(laptop, None, remote=[backend], interval=0.1, mirror_every=0.3).start()
    try:
        follow_while_running(api, reached, go, laptop, run_id, call, backend)
    finally:
        ingestor.stop()


def follow_while_running(api: ModalDouble, reached: threading.Event, go: threading.Event, laptop: Home,
                         run_id: str, call: str, backend: ModalBackend) -> None:
    try:
        assert reached.wait(120), "no genome was scored in generation 0"
        committed = Path(api.Volume.from_name(VOLUME).path) / "runs" / run_id
        assert not (committed / "progress.json").exists()  # the Volume has no progress yet
        progress = laptop.run_dir(run_id) / "progress.json"
        wait_for(lambda: progress.is_file() and json.loads(progress.read_text())["genomes"], 10,
                 "a genome's point in the laptop's copy")
        record = json.loads(progress.read_text())
        assert record["generation"] == 0 and record["stages"]["test"]["total"] > 0
        assert json.loads((laptop.run_dir(run_id) / "status.json").read_text())["state"] == "running"
        assert not backend.knows_run(laptop, run_id)  # found by its copied config from here on
        assert [r.run_id for r in backend.remote_runs(laptop)] == []
    finally:
        go.set()
    assert api.FunctionCall.from_id(call).get(timeout=180)["state"] == "finished"
    status = laptop.run_dir(run_id) / "status.json"
    wait_for(lambda: json.loads(status.read_text())["state"] == "finished", 20, "the final state")


def test_a_modal_failure_is_the_runs_one_line_and_holds_back_no_other_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, template_home: Path,
) -> None:
    from modal import exception as modal_exception

    from coral.modal import double

    api, reached, go = held_after_generation_0(tmp_path)
    go.set()
    laptop = copy_runs(template_home, tmp_path / "laptop", ["alpha"])  # a finished local run
    run_id, call = submit_run(SMOKE, [], api=api, home=laptop)
    assert api.FunctionCall.from_id(call).get(timeout=180)["state"] == "finished"

    def expired(*args: Any, **kwargs: Any) -> Any:
        raise modal_exception.AuthError("Token ID is malformed or expired")

    for cls, name in ((double.DoubleDict, "get"), (double.DoubleQueue, "get_many"),
                      (double.DoubleVolume, "listdir"), (double.DoubleVolume, "read_file")):
        monkeypatch.setattr(cls, name, expired)
    with Ingestor(laptop, None, remote=[ModalBackend(api)], db_path=":memory:") as ingestor:
        ingestor.run_once()
        reason = ingestor.status.unreadable[run_id]
        assert "\n" not in reason and "AuthError" in reason and "expired" in reason
        assert ingestor.store.last_seqs()["alpha"] > 0  # the local run was ingested all the same
    monkeypatch.undo()  # the token is back: the next ingestor copies the run whole
    with Ingestor(laptop, None, remote=[ModalBackend(api)], db_path=":memory:", mirror_every=0.0) as ingestor:
        for _ in range(5):
            ingestor.run_once()
        assert run_id not in ingestor.status.unreadable
        assert store_rows(ingestor.store.con, run_id) == from_volume(api, run_id)
    for cls, name in ((double.DoubleDict, "get"), (double.DoubleVolume, "listdir")):
        monkeypatch.setattr(cls, name, expired)
    with Ingestor(laptop, None, remote=[ModalBackend(api)], db_path=":memory:") as ingestor:
        ingestor.run_once()  # offline again, but the copy is whole: nothing to say, all there
        assert ingestor.status.unreadable == {}
        assert store_rows(ingestor.store.con, run_id) == from_volume(api, run_id)
