"""The rule that names a run's best genome (coral.analysis.genome_means.rank_best), on hand-made
scores: a genome scored once never outranks one scored at least twice."""

import math

import pandas as pd

from coral.analysis.genome_means import fitness_by_genome, rank_best


def scores(rows: list[tuple[str, str, int, float, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["run_id", "genome_id", "generation", "fitness", "evaluations"])


def test_a_single_lucky_evaluation_does_not_win_when_proven_genomes_exist() -> None:
    frame = fitness_by_genome(scores([
        ("a", "lucky", 3, 0.90, 1),            # one draw, the highest number in the run
        ("a", "steady", 1, 0.50, 1), ("a", "steady", 2, 0.54, 2), ("a", "steady", 3, 0.52, 3),
        ("a", "fair", 2, 0.60, 1), ("a", "fair", 3, 0.40, 2),
        ("b", "only", 0, 0.30, 1), ("b", "other", 0, 0.35, 1),  # run b: nothing evaluated twice
    ]))
    ranked = rank_best(frame)
    best = ranked.drop_duplicates("run_id").set_index("run_id")["genome_id"].to_dict()
    assert best == {"a": "steady", "b": "other"}
    a = ranked[ranked["run_id"] == "a"]
    assert list(a["genome_id"]) == ["steady", "fair", "lucky"]  # proven first, then by mean
    steady = a.set_index("genome_id").loc["steady"]
    assert steady["fitness"] == 0.52 and steady["evaluations"] == 3
    assert math.isclose(steady["se"], pd.Series([0.50, 0.58, 0.48]).std() / math.sqrt(3))


def test_an_empty_frame_ranks_to_an_empty_frame() -> None:
    assert rank_best(fitness_by_genome(scores([]))).empty


def test_a_stale_lucky_pair_does_not_outrank_the_survivors_evaluated_since() -> None:
    """A genome dropped after two lucky draws keeps that mean; survivors evaluated in the run's
    latest generation (the final rounds race exactly these) come first."""
    frame = fitness_by_genome(scores([
        ("a", "dropped", 0, 0.80, 1), ("a", "dropped", 1, 0.75, 2),   # mean 0.75, never seen again
        ("a", "raced", 0, 0.70, 1), ("a", "raced", 1, 0.65, 2), ("a", "raced", 2, 0.60, 3),
        ("a", "raced", 3, 0.58, 4),
        ("a", "other", 2, 0.50, 1), ("a", "other", 3, 0.52, 2),
        ("a", "child", 3, 0.95, 1),                                     # scored once, latest generation
    ]))
    ranked = list(rank_best(frame)["genome_id"])
    assert ranked == ["raced", "other", "dropped", "child"]
