"""bench/evolution_signal.py --runs: real `coral run`s of one config (evolution and random search)
re-evaluated through the bench; the best genome it re-evaluates is coral.analysis.best's, and runs
of another config are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coral.analysis.best import best_genome
from coral.evolution.selection import CANDIDATE_OBJECTIVES
from coral.home import Home
from coral.run.events import read_events

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "evolution_signal.py"


def _run(env: dict[str, str], run_id: str, *overrides: str) -> None:
    args = [sys.executable, "-m", "coral", "run", str(REPO / "configs" / "local.yaml"), "--run-id", run_id,
            "--workers", "1"]
    for item in overrides:
        args += ["--set", item]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def _micro(tmp_path: Path, *overrides: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """A home and a micro experiment of configs/local.yaml: 4 train and 3 eval instances, 3 generations."""
    split = json.loads((REPO / "configs" / "local.split.json").read_text())
    micro = tmp_path / "split.json"
    micro.write_text(json.dumps({"train": split["train"][:4], "eval": split["eval"][:3]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update({"CORAL_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)})
    return env, ("generations=3", "evolution.final_rounds=1", f"benchmark.split={micro}", "training.steps=2",
                 "benchmark.samples=1", *overrides)


@pytest.mark.slow
def test_runs_are_reevaluated_with_their_own_best_genome(tmp_path: Path) -> None:
    env, small = _micro(tmp_path, "population=2")
    _run(env, "evo", *small)
    _run(env, "rnd", *small, "strategy=random")

    bench = [sys.executable, "-P", str(BENCH), "--fresh", "1", "--fresh-samples", "2", "--runs"]
    done = subprocess.run([*bench, "evo", "rnd"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    rows = result["runs"]
    assert [len(rows[name]) for name in ("evolution", "random", "no-adapter", "echo")] == [1, 1, 1, 1]
    home = Home(tmp_path / "home")
    assert rows["evolution"][0]["best"] == best_genome("evo", home)["genome_id"]
    assert rows["random"][0]["best"] == best_genome("rnd", home)["genome_id"]
    assert result["instances"] == 3 and all(len(rows[n][0]["solved"]) == 3 for n in rows)
    assert "evolution - no-adapter, fresh fixed@k" in done.stdout
    # The final round's effect: each run's pick as it stood before it, on the same fresh seeds.
    for name, run in (("evolution", "evo"), ("random", "rnd")):
        before = rows[name][0]["before_final_rounds"]
        assert before["best"] == best_genome(run, home, until=1)["genome_id"]
        assert 0.0 <= before["fresh_fixed_at_k"] <= 1.0
    assert "final rounds: the pick changed in" in done.stdout

    _run(env, "other", *small, "generations=2")
    refused = subprocess.run([*bench, "evo", "other"], env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0
    assert "another experiment" in refused.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_selection_on_fix_chance_alone_picks_in_the_bench_what_a_real_run_picks(tmp_path: Path) -> None:
    """With only fix_chance weighted, the bench's in-process loop samples nothing during search;
    its selection must still be the engine's: the same config and seed pick the same genome as a
    real `coral run` (real job bodies computing fix_chance in the generate job)."""
    env, small = _micro(tmp_path, "population=3", *(f"objectives.weights.{n}=0" for n in CANDIDATE_OBJECTIVES),
                        "objectives.weights.fix_chance=1")
    _run(env, "fc", *small)
    home = Home(tmp_path / "home")
    events = [e for e in read_events(home.events_dir("fc")) if e.type == "generation_finished"]
    assert events and all(s["fitness"] == pytest.approx(s["fix_chance"]) for s in events[-1].data["genomes"].values())
    sets = [x for item in small for x in ("--set", item)]
    done = subprocess.run([sys.executable, "-P", str(BENCH), "--seeds", "1", "--fresh", "1", "--fresh-samples", "1",
                           "--home", str(tmp_path / "home"), *sets], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["runs"]["evolution"][0]["best"] == best_genome("fc", home)["genome_id"]
    assert 0.0 <= result["runs"]["evolution"][0]["fresh_fix_chance"] <= 1.0


def test_a_store_in_use_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """--runs ingests the home's runs first; while another writer (a dashboard, `coral ingest`)
    holds the store, the bench says so in one line and exits non-zero."""
    from coral.store.store import Store

    home = Home(tmp_path / "home").ensure()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update({"CORAL_HOME": str(home.root), "PYTHONPATH": str(REPO)})
    holder = Store(home.store_db)
    try:
        done = subprocess.run([sys.executable, "-P", str(BENCH), "--runs", "e-s0", "r-s0"], env=env,
                              capture_output=True, text=True, timeout=300)
    finally:
        holder.close()
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert lines[-1].startswith("evolution_signal: the store") and "in use by process" in lines[-1], lines
