"""coral.analysis and coral.analysis.figures on real (stand-in body) runs: numbers equal the events."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from test_store_support import copy_runs, log_events

from coral import analysis
from coral.analysis import figures, queries
from coral.errors import CoralError
from coral.evolution.ca import grid_from_seed
from coral.evolution.genome import Genome
from coral.evolution.pareto import pareto_front
from coral.store.ingest import Ingestor
from coral.store.schema import OBJECTIVES
from coral.store.store import snapshot_path


@pytest.fixture
def home(template_home: Path, tmp_path: Path):
    home = copy_runs(template_home, tmp_path)
    with Ingestor(home, None) as ing:
        ing.run_once(snapshot=True)
    return home


def test_curves_and_baseline_equal_the_events(home) -> None:
    events = log_events(home, "alpha")
    finished = [e for e in events if e["type"] == "generation_finished"]
    curves = analysis.fitness_curves("alpha", home=home)
    for e in finished:
        for metric in ("fitness", "bugfix", "syntax", "fixed_at_k"):
            for stat in ("best", "mean"):
                got = curves[(curves.generation == e["generation"]) & (curves.metric == metric)
                             & (curves.stat == stat)]["value"]
                assert got.tolist() == [e["data"][stat][metric]]
    diversity = analysis.diversity_curves("alpha", home=home)
    assert diversity["genotype_diversity"].tolist() == [e["data"]["genotype_diversity"] for e in finished]
    cache = analysis.cache_curve("alpha", home=home)
    assert cache["cache_hit_rate"].tolist() == [e["data"]["cache"]["hit_rate"] for e in finished]
    base = next(e for e in events if e["type"] == "baseline_finished")["data"]
    got = analysis.baseline("alpha", home=home)
    assert got["fitness"] == base["objectives"]["fitness"] and got["problems"] == base["problems"]


def test_load_run_pareto_and_genome_detail(home) -> None:
    data = analysis.load_run("alpha", home=home)
    assert len(data.generations) == 3 and set(data.scores.generation) == {0, 1, 2}
    jobs = [e for e in log_events(home, "alpha") if e["type"] == "job_finished"]
    assert len(data.evaluations) == len(jobs)
    points = analysis.pareto("alpha", 1, ["bugfix", "style", "syntax"], home=home)
    expected = pareto_front(points[["bugfix", "style", "syntax"]].to_numpy())
    assert np.flatnonzero(points["on_front"].to_numpy()).tolist() == expected.tolist()
    genome_id = data.scores.genome_id.iloc[0]
    detail = analysis.genome_detail("alpha", genome_id, home=home)
    checkpoint = Path(home.checkpoints_dir("alpha") / "gen-00000.json").read_text()
    import json

    genome = next(Genome.model_validate(g) for g in json.loads(checkpoint)["population"]
                  if Genome.model_validate(g).id == genome_id)
    assert np.array_equal(detail["ca_initial"], grid_from_seed(genome.seed))
    assert detail["ca_final"].shape == (genome.seed.height, genome.seed.width)
    assert detail["genes"]["rank"] == genome.genes.rank and detail["knobs"]["top_k"] == genome.knobs.top_k
    mine = [e["data"] for e in jobs if e["data"]["genome"] == genome_id]
    assert sorted(detail["problems"]["candidate"]) == sorted(d["candidate"] for d in mine)
    hv = analysis.front_hypervolume("alpha", 1, ["bugfix", "style"], home=home)
    assert 0 < hv <= 1


def test_compare_runs_names_the_differing_config_keys(home) -> None:
    result = analysis.compare_runs(["alpha", "beta"], "bugfix", home=home)
    assert set(result["config_diff"]) >= {"seed", "generations"}
    assert result["config_diff"]["seed"] == {"alpha": 0, "beta": 1}
    assert "population" not in result["config_diff"]
    assert result["final"]["last_generation"].tolist() == [2, 1]
    assert len(result["curves"]) == 5


def test_logs_fallback_equals_snapshot(template_home: Path, tmp_path: Path, home) -> None:
    fresh = copy_runs(template_home, tmp_path / "no-snapshot")
    assert not snapshot_path(fresh).exists()
    a = analysis.fitness_curves("beta", home=fresh)
    b = analysis.fitness_curves("beta", home=home)
    assert a.equals(b)
    with pytest.raises(CoralError, match="no store snapshot"):
        with analysis.connect(fresh, source="snapshot"):
            pass


def test_bad_requests_are_one_clear_line(home) -> None:
    with pytest.raises(CoralError, match="no run 'nope'"):
        analysis.fitness_curves("nope", home=home)
    with pytest.raises(CoralError, match="unknown objective 'speed'"):
        analysis.fitness_curves("alpha", ["speed"], home=home)
    with pytest.raises(CoralError, match="2 or 3 objectives"):
        analysis.pareto("alpha", 0, ["bugfix"], home=home)
    with pytest.raises(CoralError, match="no scores for generation 9"):
        analysis.pareto("alpha", 9, home=home)


def test_one_run_id_as_a_string_is_that_run(home) -> None:
    """best_genomes("alpha") read runs 'a', 'l', 'p', ...: an empty table, no word said."""
    one = analysis.best_genomes("alpha", home=home)
    assert one["run_id"].tolist() == ["alpha"]
    assert one.equals(analysis.best_genomes(["alpha"], home=home))
    assert analysis.replicate_groups("beta", home=home)["run_id"].tolist() == ["beta"]
    assert analysis.compare_runs("alpha", home=home)["final"]["run_id"].tolist() == ["alpha"]
    with pytest.raises(CoralError, match="no run 'nope'"):
        analysis.best_genomes(["alpha", "nope"], home=home)


def test_run_curves_is_every_curve_in_one_read(home) -> None:
    curves = analysis.run_curves("alpha", home=home)
    assert list(curves.generations.columns) == list(analysis.CURVE_COLUMNS)
    long = analysis.fitness_curves("alpha", home=home)
    for metric in ("fitness", "bugfix", "fixed_at_k"):
        for stat in ("best", "mean"):
            part = long[(long.metric == metric) & (long.stat == stat)]
            assert curves.generations[f"{stat}_{metric}"].tolist() == part["value"].tolist()
    assert curves.generations["cache_hit_rate"].tolist() == \
        analysis.cache_curve("alpha", home=home)["cache_hit_rate"].tolist()
    assert curves.baseline == analysis.baseline("alpha", home=home)
    with pytest.raises(CoralError, match="no run 'nope'"):
        analysis.run_curves("nope", home=home)


def test_live_figure_has_every_curve_in_one_figure(home) -> None:
    curves = analysis.run_curves("alpha", home=home)
    fig = figures.live_figure("alpha", home=home)
    titles = [a.text for a in fig.layout.annotations if a.text.startswith("<b>")]
    assert titles == ["<b>fitness per generation</b>", *(f"<b>{o} per generation</b>" for o in OBJECTIVES),
                      "<b>diversity per generation</b>", "<b>adapter cache hit rate</b>"]
    assert fig.data[0].name == "best" and list(fig.data[0].y) == curves.generations["best_fitness"].tolist()
    panels = len(OBJECTIVES) + 3  # fitness, each objective, diversity, cache
    assert {t.yaxis for t in fig.data} == {"y", *(f"y{i}" for i in range(2, panels + 1))}
    assert sum(t.showlegend for t in fig.data if t.legendgroup == "best") == 1  # one legend entry
    base = analysis.baseline("alpha", home=home)
    assert [s.y0 for s in fig.layout.shapes][:1] == [base["fitness"]]  # the baseline, dashed
    assert list(fig.data[-1].y) == curves.generations["cache_hit_rate"].tolist()


def test_figures(home) -> None:
    fig = figures.fitness_figure("alpha", home=home)
    assert [t.name for t in fig.data] == ["best fitness", "mean fitness"]
    assert fig.layout.shapes and fig.layout.shapes[0].y0 == analysis.baseline("alpha", home=home)["fitness"]
    assert len(figures.diversity_figure("alpha", home=home).data) == 2
    cache = analysis.cache_curve("alpha", home=home)["cache_hit_rate"].tolist()
    assert list(figures.cache_figure("alpha", home=home).data[0].y) == cache
    flat = figures.pareto_figure("alpha", 0, home=home)
    cube = figures.pareto_figure("alpha", 0, ["bugfix", "style", "fitness"], home=home)
    assert flat.data[0].type == "scatter" and cube.data[0].type == "scatter3d"
    assert sum(len(t.x) for t in flat.data) == 4
    assert len(figures.compare_figure(["alpha", "beta"], home=home).data) == 4


def test_snapshot_connection_is_kept_until_the_file_is_replaced(template_home: Path, tmp_path: Path) -> None:
    home = copy_runs(template_home, tmp_path, ["beta"])
    snap = snapshot_path(home)
    errors: list[BaseException] = []

    def read_many() -> None:
        try:
            for _ in range(15):
                assert len(analysis.fitness_curves("beta", home=home)) > 0
        except BaseException as exc:  # reported below
            errors.append(exc)

    with Ingestor(home, None) as ing:
        ing.run_once(snapshot=True)
        analysis.list_runs(home)
        first = queries._snapshots[snap]
        analysis.cache_curve("beta", home=home)
        assert queries._snapshots[snap] is first  # same file: same attached version
        with pytest.raises(CoralError, match="no run 'alpha'"):
            analysis.fitness_curves("alpha", home=home)
        shutil.copytree(template_home / "runs" / "alpha", home.runs / "alpha")
        readers = [threading.Thread(target=read_many) for _ in range(3)]
        for thread in readers:
            thread.start()
        ing.run_once(snapshot=True)  # replaces the file while the threads read
        for thread in readers:
            thread.join(60)
    assert not errors, errors[0]
    assert len(analysis.fitness_curves("alpha", home=home)) > 0  # the new file is read
    assert queries._snapshots[snap] is not first
    assert not first.attached  # the old version was detached once its readers were done
