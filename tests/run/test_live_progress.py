"""A run as it happens (coral/run/progress.py): per-generation counts with totals known up front,
each genome's scores as it lands, pause holding every queued job at the workers, the time-left
estimate. Real processes: `coral run --detach` with local workers on stand-in job bodies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from coral.execution.jobs import HOLDS_DICT, job_queue
from coral.execution.transport import LocalTransport
from coral.home import Home
from coral.run.checkpoints import PREFIX
from coral.run.events import read_events
from coral.run.progress import rates, read_progress, seconds_left

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"
FAKES = "coral.testing.fakes:HANDLERS"


def coral(home: Path, *args: str, sleep: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update({"CORAL_HOME": str(home), "PYTHONPATH": str(REPO)})
    if sleep is not None:
        env["CORAL_FAKE_SLEEP"] = sleep
    return subprocess.run([sys.executable, "-m", "coral", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def wait_for(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def state(home: Path, run_id: str) -> str:
    return json.loads((home / "runs" / run_id / "status.json").read_text())["state"]


@pytest.mark.slow
def test_pause_holds_every_queued_job_and_progress_is_per_generation(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = coral(home, "run", str(SMOKE), "--run-id", "hold", "--handlers", FAKES,
                 "--set", "generations=2", "--detach", sleep="0.3")
    assert done.returncode == 0, done.stderr
    try:
        _pause_and_finish(home)
    finally:
        if state(home, "hold") in ("running", "paused"):
            coral(home, "stop", "hold")


def _pause_and_finish(home: Path) -> None:
    # Pause once some tests of generation 0 are done and most are still to run.
    wait_for(lambda: (p := read_progress(Home(home), "hold")) and p["stages"]
             and p["stages"]["test"]["done"] >= 2)
    assert coral(home, "pause", "hold").returncode == 0
    wait_for(lambda: state(home, "hold") == "paused")
    # Jobs started before the pause finish (a job shows as running only once it holds a lease,
    # after a second; these take 0.3 s): wait until the counts stay put for a second, then
    # nothing may move.
    def settled() -> dict | None:
        before = read_progress(Home(home), "hold")
        time.sleep(1.0)
        after = read_progress(Home(home), "hold")
        return after if after["stages"] == before["stages"] and after["paused"] else None

    first = wait_for(settled, timeout=30)
    with LocalTransport(Home(home).queue_db) as transport:
        depth = transport.queue(job_queue("test")).len(total=True)
        time.sleep(2.0)
        assert transport.queue(job_queue("test")).len(total=True) == depth
    later = read_progress(Home(home), "hold")
    assert later["paused"] is True
    moved = {(stage, k): (first["stages"][stage][k], later["stages"][stage][k])
             for stage in first["stages"] for k in ("done", "failed", "running")}
    assert all(a == b for a, b in moved.values()), f"a job ran while the run was paused: {moved}"
    # Jobs the workers took show as held once the executor has seen their leases (at most one per
    # worker, of whichever stage it took); the rest of the generation waits queued, or unsubmitted
    # behind an earlier stage's held job.
    stages = wait_for(lambda: (p := read_progress(Home(home), "hold")["stages"])
                      and sum(s["held"] for s in p.values()) >= 1 and p, timeout=10)
    for stage, counts in stages.items():
        assert counts["done"] == first["stages"][stage]["done"]
        assert counts["held"] + counts["queued"] + counts["done"] <= counts["total"], stage
    tests = stages["test"]
    assert tests["total"] - tests["done"] > 0
    total0 = tests["total"]  # known up front: checked against the generation's events below

    assert coral(home, "continue", "hold").returncode == 0
    wait_for(lambda: state(home, "hold") == "finished", timeout=90)
    final = read_progress(Home(home), "hold")
    assert final["generation"] == 1
    # The totals known when each generation started are the test jobs it ran (its events), and
    # the counts are per generation, not added up across generations.
    tests_run = Counter(e.generation for e in read_events(Home(home).events_dir("hold"))
                        if e.type == "job_finished")
    assert total0 == tests_run[0]
    assert final["stages"]["test"]["total"] == final["stages"]["test"]["done"] == tests_run[1]
    assert final["stages"]["generate"]["done"] == final["stages"]["generate"]["total"]
    # A genome's live point is its first evaluation's scores: what the checkpoint records for it
    # (a survivor evaluated again later is recorded as the mean of its evaluations).
    seen: set[str] = set()
    for generation in (0, 1):
        checkpoint = json.loads((home / "runs" / "hold" / "checkpoints"
                                 / f"{PREFIX}{generation:05d}.json").read_text())
        live = {g["genome"]: g["fitness"] for g in final["genomes"]
                if g["generation"] == generation and g["genome"] not in seen}
        assert live and all(checkpoint["scores"][gid]["fitness"] == value for gid, value in live.items())
        seen |= set(live)
    assert [f["generation"] for f in final["finished"]] == [0, 1]
    # A finished run leaves no hold behind; `coral runs` counts finished generations.
    listing = coral(home, "runs").stdout.splitlines()
    assert listing[0].split()[2:4] == ["DONE", "GEN"] and listing[1].split()[1:4] == ["finished", "2/2", "-"]
    status = coral(home, "status", "hold").stdout
    assert "2 of 2 generations finished (last: generation 1)" in status, status
    assert json.loads(coral(home, "status", "hold", "--json").stdout)["generations_done"] == 2
    with LocalTransport(Home(home).queue_db) as transport:
        assert transport.dict(HOLDS_DICT).keys() == []


def _progress(**over: object) -> dict:
    base = {"started": 0.0, "generation": 1, "generations": 4, "generation_started": 100.0,
            "paused": False, "paused_seconds": 0.0,
            "stages": {"train": {"total": 2, "done": 2, "failed": 0},
                       "generate": {"total": 4, "done": 4, "failed": 0},
                       "test": {"total": 40, "done": 10, "failed": 0}},
            "busy": {"train": 20.0, "generate": 8.0, "test": 20.0},
            "jobs_done": {"train": 4, "generate": 8, "test": 40},
            "finished": [{"generation": 0, "seconds": 90.0}], "recent": {}}
    base.update(over)
    return base


def test_seconds_left_weighs_work_by_measured_job_times() -> None:
    # Mean job times: train 5 s, generate 1 s, test 0.5 s. Work of generation 1: 10 + 4 + 20 = 34;
    # done 10 + 4 + 5 = 19 in 38 s, so it should take 68 s: 30 s left, then 2 more generations.
    # With one finished generation (0), later ones are estimated at its 90 s.
    assert seconds_left(_progress(), now=138.0) == pytest.approx(30.0 + 2 * 90.0)
    # Time spent paused is not work: the same numbers 20 s later, 20 s of it paused.
    assert seconds_left(_progress(paused_seconds=20.0), now=158.0) == pytest.approx(210.0)
    # Generation 0 is left out of the typical length once another generation finished.
    two = [{"generation": 0, "seconds": 90.0}, {"generation": 1, "seconds": 40.0}]
    assert seconds_left(_progress(generation=2, finished=two), now=138.0) == pytest.approx(30.0 + 40.0)
    # No measured time yet for a stage with work left: no estimate rather than a wrong one.
    fresh = _progress(jobs_done={"train": 4, "generate": 8, "test": 0})
    assert seconds_left(fresh, now=138.0) is None


def test_rates_are_smoothed_over_a_window() -> None:
    recent = {"test": [100.0 + i for i in range(30)], "train": [], "generate": []}
    measured = rates({"started": 0.0, "recent": recent}, now=130.0, window=30.0)
    assert measured["test"] == pytest.approx(1.0)  # 30 jobs in the last 30 s, whatever the last second held
    assert measured["train"] == 0.0
    assert rates({"started": 129.5, "recent": recent}, now=130.0)["test"] is None  # too young to say
