"""Replicates (coral/analysis/replicates.py) and lineage (coral/analysis/lineage.py) on real
finished runs: the engine on stand-in job bodies, serial backend, read back from the store."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from coral import analysis
from coral.analysis.best import best_genome, best_genomes, genome_fitness
from coral.analysis.lineage import best_genome_id, missing_parents
from coral.analysis.replicates import MIN_BAND, config_group, replicate_chart, t95, too_wide_note
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


def stopped_run(home: Path, run_id: str, *extra: str) -> None:
    """A real run stopped by `coral stop` once its generation 0 has finished."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    # Jobs slow enough that `coral stop`, started on a loaded machine, lands within generation 1.
    env.update({"CORAL_HOME": str(home), "PYTHONPATH": str(REPO), "CORAL_FAKE_SLEEP": "0.25"})

    def coral(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "coral", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)

    started = coral("run", str(REPO / "configs" / "smoke.yaml"), "--backend", "serial", "--handlers", FAKES,
                    "--run-id", run_id, "--detach", "--set", "generations=2", *extra)
    assert started.returncode == 0, started.stderr[-2000:]
    status = Path(home) / "runs" / run_id / "status.json"
    deadline = time.monotonic() + 120
    while json.loads(status.read_text()).get("generation", 0) < 1:  # generation 0 has finished
        assert time.monotonic() < deadline, "generation 0 did not finish"
        time.sleep(0.1)
    assert coral("stop", run_id).returncode == 0
    while json.loads(status.read_text())["state"] != "stopped":
        assert time.monotonic() < deadline, "the run did not stop"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    root = tmp_path_factory.mktemp("replicates") / "home"
    for seed in (0, 1, 2):
        fake_run(root, f"seed{seed}", "--set", f"seed={seed}")
    fake_run(root, "other", "--set", "population=6")
    fake_run(root, "long", "--set", "population=8", "--set", "generations=6", "--set", "seed=6")
    fake_run(root, "seed1-again", "--set", "seed=1")  # a repeated seed: not a new replicate
    stopped_run(root, "seed3-stopped", "--set", "seed=3")
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
        # Clipped to [0, 1], the range of every metric.
        assert (row["lo"], row["hi"]) == (pytest.approx(max(0.0, mean - half)), pytest.approx(min(1.0, mean + half)))
    other = curves[curves["group"] == groups.loc["other", "group"]]
    assert set(other["n"]) == {1} and other["lo"].isna().all()  # one seed: no interval
    baselines = [float((analysis.baseline(r, home) or {})["fitness"]) for r in ("seed0", "seed1", "seed2")]
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
    # A key added to CORAL later (training.data, at the default that does what runs did before)
    # does not split a config's runs from before and after it.
    before = {**base, "training": {"steps": 80, "learning_rate": 0.001, "batch_size": 4, "max_length": 1024}}
    after = {**base, "training": {**before["training"], "data": "instances"}}
    assert config_group(before) == config_group(after)
    assert config_group(before) != config_group({**after, "training": {**after["training"], "data": "program-mutants"}})
    assert config_group({**base, "objectives": {"weights": {"bugfix": 1.0}}}) != config_group(
        {**base, "objectives": {"weights": {"bugfix": 1.0, "style": 1.0}}})  # a mapping value is kept whole
    assert t95(1) == 12.706 and t95(100) == 1.96
    with pytest.raises(CoralError):
        t95(0)


def test_lineage_walks_parents_back_to_the_first_generation(home: Home) -> None:
    best = best_genome_id("seed0", home)
    assert best == best_genome("seed0", home)["genome_id"]  # the one definition of best

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


def test_every_parent_of_every_genome_of_every_run_is_a_genome_of_that_run(home: Home) -> None:
    """Whole runs: lineage is complete back to generation 0 (no parent that was never evaluated,
    the bug where a mutated crossover child named the unevaluated crossover product)."""
    origins: set[str] = set()
    for run_id in analysis.list_runs(home)["run_id"]:
        genomes = analysis.load_run(run_id, home).genomes.set_index("genome_id")
        scored = set(analysis.load_run(run_id, home).scores["genome_id"])
        for gid, row in genomes.iterrows():
            parents = list(row["parents"])
            origins.add(row["origin"].split(":")[0])
            assert set(parents) <= set(genomes.index), (run_id, gid, row["origin"], parents)
            assert set(parents) <= scored  # every parent was evaluated
            assert all(genomes.loc[p, "generation"] < row["generation"] for p in parents)
            if row["generation"] == 0:
                assert parents == [] and row["origin"] == "ca"
            else:
                assert parents and row["origin"].split(":")[0] in ("crossover", "crossover+mutation", "mutation")
            # Every genome's ancestry ends in generation 0.
            tree = analysis.lineage(run_id, gid, home)
            assert tree["generation"].min() == 0
        assert missing_parents(run_id, home) == {}
    assert "crossover+mutation" in origins  # the case that lost its parents is exercised


def test_best_is_the_mean_over_evaluations_with_its_count_and_se(home: Home) -> None:
    scores = analysis.load_run("long", home).scores.sort_values(["genome_id", "generation"])
    ranked = genome_fitness("long", home).set_index("genome_id")
    # Hand computation for every genome: single evaluations from consecutive running means.
    for gid, part in scores.groupby("genome_id"):
        singles: list[float] = []
        previous = 0.0
        for mean, count in zip(part["fitness"], part["evaluations"], strict=True):
            singles = [mean] if count == 1 else [*singles, count * mean - (count - 1) * previous]
            previous = mean
        row = ranked.loc[gid]
        assert row["fitness"] == pytest.approx(sum(singles) / len(singles))
        assert row["evaluations"] == len(singles) == part["evaluations"].iloc[-1]
        if len(singles) > 1:
            mean = sum(singles) / len(singles)
            sd = math.sqrt(sum((v - mean) ** 2 for v in singles) / (len(singles) - 1))
            assert row["se"] == pytest.approx(sd / math.sqrt(len(singles)))
        else:
            assert math.isnan(row["se"])
    top = best_genome("long", home)
    # The highest mean among the genomes evaluated at least twice, not a single lucky draw.
    proven = ranked[ranked["evaluations"] >= 2]
    assert not proven.empty
    assert top["evaluations"] >= 2 and top["fitness"] == proven["fitness"].max()
    # This run has a genome scored once that ranks above every proven one: the rule, not the data,
    # decides the answer here.
    assert ranked["fitness"].max() > top["fitness"]
    # Not the luckiest single evaluation: some genome's earlier running mean beats its final mean.
    lucky = scores.groupby("genome_id")["fitness"].max()
    assert (lucky > ranked["fitness"].reindex(lucky.index) + 1e-12).any()
    # The same genome everywhere: the runs table, the export, lineage, the CLI.
    from coral.services.dashboard import best_genome as export_best

    listed = analysis.list_runs(home).set_index("run_id").loc["long"]
    assert (listed["best_genome"], listed["best_fitness"], listed["best_evaluations"]) == (
        top["genome_id"], top["fitness"], top["evaluations"])
    assert export_best("long", home)["genome_id"] == top["genome_id"]
    assert best_genome_id("long", home) == top["genome_id"]
    assert best_genomes(None, home).set_index("run_id").loc["long", "genome_id"] == top["genome_id"]


def test_replicates_are_finished_runs_with_distinct_seeds_and_the_rest_is_drawn_apart(home: Home) -> None:
    ids = ["seed0", "seed1", "seed2", "seed1-again", "seed3-stopped"]
    groups = analysis.replicate_groups(ids, home).set_index("run_id")
    assert len(set(groups["group"])) == 1  # one config
    assert list(groups.loc[["seed0", "seed1", "seed2"], "counted"]) == [True, True, True]
    assert groups.loc["seed1-again", "why"] == "seed 1 repeats run seed1"
    assert groups.loc["seed3-stopped", "why"] == "stopped after 1 generation"
    assert not groups.loc[["seed1-again", "seed3-stopped"], "counted"].any()
    # Which run of a repeated seed counts does not depend on what is chosen.
    alone = analysis.replicate_groups(["seed1-again"], home).set_index("run_id")
    assert not alone.loc["seed1-again", "counted"]

    result = analysis.replicate_curves(ids, "fitness", "best", home)
    curves = result["curves"].set_index("generation")
    assert set(curves["n"]) == {3}  # seed0, seed1, seed2: not the repeat, not the stopped run
    for generation in (0, 1):
        values = [analysis.load_run(r, home).generations.set_index("generation").loc[generation, "best_fitness"]
                  for r in ("seed0", "seed1", "seed2")]
        assert curves.loc[generation, "mean"] == pytest.approx(sum(values) / 3)
    apart = result["apart"]
    assert sorted(set(apart["run_id"])) == ["seed1-again", "seed3-stopped"]
    assert list(apart[apart["run_id"] == "seed3-stopped"]["generation"]) == [0]
    assert result["narrow"] == {}
    fig = replicate_chart(result)
    names = [t.name for t in fig.data]
    assert any("n = 3 seeds" in n for n in names)
    assert any(n.startswith("seed3-stopped: not counted (stopped") for n in names)
    assert any(n.startswith("seed1-again: not counted (seed 1 repeats") for n in names)
    assert fig.layout.xaxis.dtick == 1  # whole generations, no 0.5 ticks


def test_bands_are_clipped_to_the_metric_range_and_below_three_seeds_not_drawn(home: Home) -> None:
    two = analysis.replicate_curves(["seed0", "seed1"], "fitness", "best", home)
    assert set(two["curves"]["n"]) == {2} and two["narrow"] == {two["curves"]["group"].iloc[0]: 2}
    assert ((two["curves"]["lo"] >= 0) & (two["curves"]["hi"] <= 1)).all()
    assert not [t for t in replicate_chart(two).data if t.fill == "toself"]  # too wide to draw
    note = too_wide_note(two)
    assert note is not None and "n = 2" in note and "too wide to read" in note
    assert MIN_BAND == 3
    # With t(0.975, 1) = 12.7 the raw interval leaves [0, 1] unless the two seeds agree closely.
    raw = two["curves"].assign(spread=lambda f: f["hi"] - f["lo"])
    assert (raw["spread"] <= 1).all()
    three = analysis.replicate_curves(["seed0", "seed1", "seed2"], "fitness", "best", home)
    assert too_wide_note(three) is None


def test_generation_axes_tick_whole_generations_and_titles_clear_legends(home: Home) -> None:
    from coral.analysis import figures
    from coral.analysis.live import genomes_chart, points_frame
    from coral.analysis.replicates import generation_axis

    assert generation_axis(1) == {"tick0": 0, "dtick": 1} and generation_axis(399)["dtick"] == 40
    for fig in (figures.fitness_figure("long", "fitness", home), figures.compare_figure(["seed0", "long"], home=home),
                replicate_chart(analysis.replicate_curves(["seed0", "seed1", "seed2"], home=home))):
        assert fig.layout.xaxis.dtick == 1 and fig.layout.xaxis.tick0 == 0  # no 0.5 ticks
    live = figures.live_chart(analysis.run_curves("long", home))
    assert all(live.layout[f"xaxis{s}"].dtick == 1 for s in ("", "2", "8"))
    # Legends sit below the plot, titles at the top: never one over the other.
    for fig in (figures.fitness_figure("long", "fitness", home), genomes_chart(points_frame(None))):
        assert fig.layout.legend.y < 0 and fig.layout.title.y > 0.9
