"""Replicates (coral/analysis/replicates.py) and lineage (coral/analysis/lineage.py) on real
finished runs: the engine on stand-in job bodies, serial backend, read back from the store."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from coral import analysis
from coral.analysis.lineage import best_genome_id
from coral.analysis.replicates import config_group, replicate_chart, t95
from coral.errors import CoralError
from coral.home import Home

REPO = Path(__file__).resolve().parents[2]
FAKES = "coral.testing.fakes:HANDLERS"


def fake_run(home: Path, run_id: str, *extra: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update({"CORAL_HOME": str(home), "PYTHONPATH": str(REPO)})
    done = subprocess.run([sys.executable, "-m", "coral", "run", str(REPO / "configs" / "smoke.yaml"),
                           "--backend", "serial", "--handlers", FAKES, "--run-id", run_id,
                           "--set", "generations=2", *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    root = tmp_path_factory.mktemp("replicates") / "home"
    for seed in (0, 1, 2):
        fake_run(root, f"seed{seed}", "--set", f"seed={seed}")
    fake_run(root, "other", "--set", "population=6")
    return Home(root)


def test_replicates_group_by_config_and_match_a_hand_computed_interval(home: Home) -> None:
    groups = analysis.replicate_groups(None, home).set_index("run_id")
    assert groups.loc["seed0", "group"] == groups.loc["seed1", "group"] == groups.loc["seed2", "group"]
    assert groups.loc["other", "group"] != groups.loc["seed0", "group"]  # population differs
    assert sorted(groups.loc[["seed0", "seed1", "seed2"], "seed"]) == [0, 1, 2]

    result = analysis.replicate_curves(["seed0", "seed1", "seed2", "other"], "fitness", "best", home)
    curves = result["curves"]
    mine = curves[curves["group"] == groups.loc["seed0", "group"]].set_index("generation")
    assert list(mine.index) == [0, 1] and set(mine["n"]) == {3}
    for generation in (0, 1):
        values = [analysis.load_run(r, home).generations.set_index("generation").loc[generation, "best_fitness"]
                  for r in ("seed0", "seed1", "seed2")]
        mean = sum(values) / 3
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
        half = 4.303 * sd / math.sqrt(3)  # t(0.975, 2 degrees of freedom)
        row = mine.loc[generation]
        assert row["mean"] == pytest.approx(mean)
        assert (row["lo"], row["hi"]) == (pytest.approx(mean - half), pytest.approx(mean + half))
    other = curves[curves["group"] == groups.loc["other", "group"]]
    assert set(other["n"]) == {1} and other["lo"].isna().all()  # one seed: no interval
    baselines = {analysis.baseline(r, home)["fitness"] for r in ("seed0", "seed1", "seed2")}
    assert result["baselines"][groups.loc["seed0", "group"]] == pytest.approx(sum(baselines) / len(baselines))
    assert result["left_out"] == []

    fig = replicate_chart(result)
    bands = [t for t in fig.data if t.fill == "toself"]
    assert len(bands) == 1  # the three-seed group only
    assert min(bands[0].y) == pytest.approx(mine["lo"].min()) and max(bands[0].y) == pytest.approx(mine["hi"].max())


def test_replicate_group_ignores_seed_and_where_jobs_run_only() -> None:
    base = {"seed": 0, "population": 4, "backend": {"kind": "local", "workers": 2}, "model": {"name": "m"}}
    assert config_group(base) == config_group({**base, "seed": 9, "backend": {"kind": "serial"}})
    assert config_group(base) != config_group({**base, "population": 5})
    assert t95(1) == 12.706 and t95(100) == 1.96
    with pytest.raises(CoralError):
        t95(0)


def test_lineage_walks_parents_back_to_the_first_generation(home: Home) -> None:
    best = best_genome_id("seed0", home)
    scores = analysis.load_run("seed0", home).scores
    last = scores[scores["generation"] == scores["generation"].max()]
    assert best == last.sort_values(["fitness", "genome_id"], ascending=[False, True])["genome_id"].iloc[0]

    genomes = analysis.load_run("seed0", home).genomes.set_index("genome_id")
    tree = analysis.lineage("seed0", None, home).set_index("genome_id")
    # Every ancestor is there, one level deeper than its child; parents of a genome are in the tree.
    for gid, row in tree.iterrows():
        for parent in genomes.loc[gid, "parents"]:
            assert parent in tree.index and tree.loc[parent, "depth"] <= row["depth"] + 1
    path = analysis.best_path("seed0", home)
    assert path["genome_id"].iloc[0] == best and list(path["depth"]) == list(range(len(path)))
    assert len(genomes.loc[path["genome_id"].iloc[-1], "parents"]) == 0  # ends at a genome with no parents
    for child, parent in zip(path["genome_id"], path["genome_id"].iloc[1:], strict=False):
        candidates = list(genomes.loc[child, "parents"])
        assert parent in candidates
        fitness = {p: tree.loc[p, "fitness"] for p in candidates}
        assert fitness[parent] == max(fitness.values())  # the fitter parent
    with pytest.raises(CoralError, match="no genome 'nope'"):
        analysis.lineage("seed0", "nope", home)
    assert isinstance(tree, pd.DataFrame)
