"""The one definition of a run's best genome, used by every page, the CLI, exports and notebooks.

A genome's fitness is the mean over all its evaluations: survivors are evaluated again each
generation and the engine averages (docs/engine.md, "Noise control"), so the single luckiest
evaluation is never the answer. The store's `scores` row of a genome at generation g holds that
running mean and its count (`evaluations`); each single evaluation is recovered from two
consecutive means (x_k = k m_k - (k-1) m_(k-1)), which gives the standard error.

The best genome of a run is the one with the highest mean fitness over its evaluations among
those evaluated at least twice, the ones evaluated in the run's latest generation first (ties:
more evaluations, then genome id), reported with its count n and SE (NaN below two evaluations).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from coral.analysis.genome_means import (
    BEST_COLUMNS,
    BEST_DEFINITION,
    describe,
    fitness_by_genome,
    rank_best,
    score_rows,
)
from coral.analysis.queries import check_run, connect, run_id_list
from coral.errors import CoralError
from coral.home import Home

__all__ = ["BEST_COLUMNS", "BEST_DEFINITION", "best_genome", "best_genomes", "describe", "fitness_by_genome",
           "genome_fitness", "rank_best"]


def genome_fitness(run_id: str, home: Home | None = None, until: int | None = None) -> pd.DataFrame:
    """Every scored genome of a run: its mean fitness over its evaluations, their count, the SE,
    and the last generation it was evaluated in; best first (the order `best_genome` picks by).
    `until`: the run as it stood after that generation (its later evaluations left out)."""
    with connect(home) as con:
        rows = score_rows(con, [run_id])
    if until is not None:
        rows = rows[rows["generation"] <= until]
    return rank_best(fitness_by_genome(rows)).drop(columns="run_id")


def best_genomes(run_ids: str | Sequence[str] | None = None, home: Home | None = None) -> pd.DataFrame:
    """The best genome of each run that has a scored genome (every run when run_ids is None):
    BEST_COLUMNS, one row per run. An id the store does not know is an error, not a missing row."""
    ids = None if run_ids is None else run_id_list(run_ids)
    with connect(home) as con:
        for run_id in ids or []:
            check_run(con, run_id)
        frame = fitness_by_genome(score_rows(con, ids))
    if frame.empty:
        return frame
    return rank_best(frame).drop_duplicates("run_id").sort_values("run_id", ignore_index=True)


def best_genome(run_id: str, home: Home | None = None, until: int | None = None) -> dict[str, Any]:
    """{genome_id, fitness (mean over its evaluations), evaluations, se, generation (its last)};
    `until`: the best as it stood after that generation."""
    frame = genome_fitness(run_id, home, until)
    if frame.empty:
        raise CoralError(f"run {run_id} has no scored genome yet")
    row = frame.iloc[0]
    return {"genome_id": str(row["genome_id"]), "fitness": float(row["fitness"]),
            "evaluations": int(row["evaluations"]), "se": float(row["se"]),
            "generation": int(row["generation"])}
