"""A genome's fitness as the mean over its evaluations, from the store's `scores` rows (pure
computation; coral.analysis.best reads the store and names the definition).

The `scores` row of a genome at generation g holds the running mean over its evaluations so far
and their count (`evaluations`); each single evaluation is recovered from two consecutive means
(x_k = k m_k - (k-1) m_(k-1)), which gives the standard error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

# How the definition is named wherever a best is shown.
BEST_DEFINITION = ("best = highest mean fitness over a genome's evaluations (n evaluations, ± SE), among "
                   "the genomes evaluated at least twice when the run has any, those evaluated in its "
                   "latest generation first")
BEST_COLUMNS = ("run_id", "genome_id", "fitness", "evaluations", "se", "generation")


def score_rows(con: Any, run_ids: Sequence[str] | None) -> pd.DataFrame:
    where = "" if run_ids is None else "WHERE list_contains($1, run_id)"
    return con.execute(f"SELECT run_id, genome_id, generation, fitness, evaluations FROM scores {where} "
                       "ORDER BY run_id, genome_id, generation",
                       [] if run_ids is None else [list(run_ids)]).df()


def fitness_by_genome(scores: pd.DataFrame) -> pd.DataFrame:
    """Per (run, genome): the mean over its evaluations, their count, SE and last generation, from
    rows of the store's `scores` table (run_id, genome_id, generation, fitness, evaluations). A
    count that restarts at 1 (the genome was dropped and bred again) starts a new series; the
    latest series is the genome's."""
    if scores.empty:
        return pd.DataFrame(columns=list(BEST_COLUMNS))
    frame = scores.sort_values(["run_id", "genome_id", "generation"], ignore_index=True)
    count = frame["evaluations"].fillna(1).astype(int)
    previous = frame.groupby(["run_id", "genome_id"], sort=False)["fitness"].shift(1)
    starts = (count <= 1) | previous.isna()
    frame["single"] = frame["fitness"].where(starts, count * frame["fitness"] - (count - 1) * previous)
    frame["series"] = starts.cumsum()
    latest = frame.groupby(["run_id", "genome_id"], sort=False)["series"].transform("last")
    frame = frame[frame["series"] == latest]
    out = frame.groupby(["run_id", "genome_id"], sort=True).agg(
        fitness=("fitness", "last"), evaluations=("single", "size"), sd=("single", "std"),
        generation=("generation", "last")).reset_index()
    out["se"] = out["sd"] / out["evaluations"].pow(0.5)  # std is NaN for one evaluation: so is SE
    out["generation"] = out["generation"].astype(int)
    return out[list(BEST_COLUMNS)]


def rank_best(frame: pd.DataFrame) -> pd.DataFrame:
    """Best first: within each run the genomes evaluated at least twice (when the run has any)
    ahead of the rest; among those, the ones evaluated in the run's latest generation first;
    then highest mean, then more evaluations, then genome id.

    Why twice: a genome scored once is ranked on one sampling draw, and the highest of many
    single draws is mostly luck (the winner's curse). On the default run every "best" scored
    once re-evaluated no better than no adapter (bench/RESULTS.md, issue 30); survivors are
    evaluated again each generation, so a run past generation 0 always has proven genomes.
    Why the latest generation first: the genomes evaluated there are the survivors of the
    generation before, whose means have taken every evaluation since; a genome dropped earlier
    keeps the mean it was dropped with, and an early lucky pair of draws would otherwise
    outrank survivors evaluated five times (the final rounds, docs/engine.md, race exactly
    these survivors)."""
    if frame.empty:
        return frame.reset_index(drop=True)
    runs = frame.groupby("run_id")
    proven = frame["evaluations"] >= runs["evaluations"].transform("max").clip(upper=2)
    current = frame["generation"] == runs["generation"].transform("max")
    ordered = frame.assign(_proven=proven, _current=proven & current).sort_values(
        ["_proven", "_current", "fitness", "evaluations", "genome_id"],
        ascending=[False, False, False, False, True], ignore_index=True)
    return ordered.drop(columns=["_proven", "_current"])


def describe(best: dict[str, Any]) -> str:
    """'0.524 (mean of 3 evaluations, SE 0.021)': how a best fitness is written everywhere."""
    n = int(best["evaluations"])
    se = best.get("se")
    spread = "" if se is None or (isinstance(se, float) and math.isnan(se)) else f", SE {float(se):.3f}"
    return f"{float(best['fitness']):.3f} (mean of {n} evaluation{'s' if n != 1 else ''}{spread})"
