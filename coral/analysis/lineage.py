"""Lineage: where a genome came from. Its ancestors (parents, how each was made, the generation
each was evaluated in) as a table and a small graph, and the path of a run's best genome back to
the initial population.

Read from the store's `genomes` table (origin and parents come from the run's checkpoints) and
`scores`. Parents are survivors of earlier generations, so a parent can be older than the
generation before its child; a crossover child that was then mutated names both survivors it
was bred from (origin `crossover+mutation:...`). A genome's fitness is its mean over its
evaluations, and the default end point is the run's best genome, both by the one definition of
best (coral.analysis.best).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

from coral.analysis.best import best_genome, fitness_by_genome, score_rows
from coral.errors import CoralError
from coral.home import Home

LINEAGE_COLUMNS = ("genome_id", "generation", "origin", "parents", "fitness", "evaluations", "depth",
                   "on_path")


def _genomes(con: Any, run_id: str) -> dict[str, dict[str, Any]]:
    frame = con.execute("""SELECT genome_id, generation, origin, parents FROM genomes WHERE run_id = $1""",
                        [run_id]).df()
    means = fitness_by_genome(score_rows(con, [run_id]))[["genome_id", "fitness", "evaluations"]]
    frame = frame.merge(means, on="genome_id", how="left")
    return {row["genome_id"]: {**row, "parents": list(row["parents"] if row["parents"] is not None else [])}
            for row in frame.to_dict("records")}


def best_genome_id(run_id: str, home: Home | None = None) -> str:
    """The run's best genome by the one definition (coral.analysis.best)."""
    return str(best_genome(run_id, home)["genome_id"])


def missing_parents(run_id: str, home: Home | None = None) -> dict[str, list[str]]:
    """Genomes of the run that name a parent which is not a genome of the run, with those
    parents; empty when the lineage is complete back to generation 0 (what the engine records)."""
    from coral.analysis.queries import connect

    with connect(home) as con:
        genomes = _genomes(con, run_id)
    return {gid: missing for gid, row in sorted(genomes.items())
            if (missing := [p for p in row["parents"] if p not in genomes])}


def genome_ids(run_id: str, home: Home | None = None) -> list[str]:
    """A run's genomes with details in the store, fittest first (unscored ones last)."""
    from coral.analysis.queries import connect

    with connect(home) as con:
        genomes = _genomes(con, run_id)
    return sorted(genomes, key=lambda g: (-_fitness(genomes[g]), g))


def _path(genomes: dict[str, dict[str, Any]], genome_id: str) -> list[str]:
    """From the genome back to a genome with no parents: at each step the fitter parent
    (ties: the first parent, the one selection drew first)."""
    path = [genome_id]
    while True:
        parents = [p for p in genomes[path[-1]]["parents"] if p in genomes and p not in path]
        if not parents:
            return path
        best = max(parents, key=lambda p: (_fitness(genomes[p]), -parents.index(p)))
        path.append(best)


def _fitness(row: dict[str, Any]) -> float:
    value = row.get("fitness")
    return float("-inf") if value is None or pd.isna(value) else float(value)


def lineage(run_id: str, genome_id: str | None = None, home: Home | None = None) -> pd.DataFrame:
    """The genome (default: the run's best) and all its ancestors, one row each: generation first
    evaluated in, origin (ca, random, grid, crossover, mutation:..., crossover+mutation:...),
    parents, fitness (mean over its evaluations) and their count,
    depth (0 = the genome, 1 = its parents, ...) and on_path (on the fitter-parent path back to
    a genome with no parents). Youngest first."""
    from coral.analysis.queries import connect

    with connect(home) as con:
        genomes = _genomes(con, run_id)
    if not genomes:
        raise CoralError(f"run {run_id} has no genome details in the store yet (they come from its "
                         "checkpoints, one per finished generation)")
    if genome_id is None:
        genome_id = best_genome_id(run_id, home)
    if genome_id not in genomes:
        raise CoralError(f"run {run_id} has no genome {genome_id!r}")
    depth = {genome_id: 0}
    frontier = [genome_id]
    while frontier:
        nxt = []
        for gid in frontier:
            for parent in genomes[gid]["parents"]:
                if parent in genomes and parent not in depth:
                    depth[parent] = depth[gid] + 1
                    nxt.append(parent)
        frontier = nxt
    on_path = set(_path(genomes, genome_id))
    rows = [{"genome_id": gid, "generation": int(genomes[gid]["generation"]),
             "origin": genomes[gid]["origin"], "parents": genomes[gid]["parents"],
             "fitness": genomes[gid]["fitness"], "evaluations": genomes[gid]["evaluations"],
             "depth": d, "on_path": gid in on_path}
            for gid, d in depth.items()]
    frame = pd.DataFrame(rows, columns=list(LINEAGE_COLUMNS))
    return frame.sort_values(["generation", "genome_id"], ascending=[False, True], ignore_index=True)


def best_path(run_id: str, home: Home | None = None) -> pd.DataFrame:
    """The run's best genome back to the initial population, one row per step (it first)."""
    frame = lineage(run_id, None, home)
    return frame[frame["on_path"]].sort_values("depth", ignore_index=True)


_ORIGIN_COLORS = {"crossover": "#0068c9", "crossover+mutation": "#83c9ff", "mutation": "#ff8700", "ca": "#29b09d",
                  "random": "#7f7f7f", "grid": "#6d3fc0"}


def lineage_chart(frame: pd.DataFrame, title: str = "") -> go.Figure:
    """Ancestors by generation (x) and fitness order within it (y); lines from parent to child;
    the fitter-parent path drawn thick."""
    ys: dict[str, float] = {}
    for _, part in frame.groupby("generation"):
        ordered = part.sort_values("fitness", ascending=False, na_position="last")
        for rank, gid in enumerate(ordered["genome_id"]):
            ys[gid] = -rank
    xs = dict(zip(frame["genome_id"], frame["generation"], strict=True))
    path = set(frame.loc[frame["on_path"], "genome_id"])
    thin_x: list[Any] = []
    thin_y: list[Any] = []
    thick_x: list[Any] = []
    thick_y: list[Any] = []
    for child, parents in zip(frame["genome_id"], frame["parents"], strict=True):
        for parent in parents:
            if parent not in xs:
                continue
            on = child in path and parent in path
            (thick_x if on else thin_x).extend([xs[parent], xs[child], None])
            (thick_y if on else thin_y).extend([ys[parent], ys[child], None])
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=thin_x, y=thin_y, mode="lines", line={"color": "#b0b0b0", "width": 1},
                             hoverinfo="skip", name="parent → child"))
    fig.add_trace(go.Scatter(x=thick_x, y=thick_y, mode="lines", line={"color": "#0e1117", "width": 3},
                             hoverinfo="skip", name="path of the fitter parent"))
    for origin, part in frame.groupby(frame["origin"].str.split(":").str[0], sort=True):
        fitness = ["-" if pd.isna(f) else f"{f:.3f}" for f in part["fitness"]]
        fig.add_trace(go.Scatter(
            x=list(part["generation"]), y=[ys[g] for g in part["genome_id"]], mode="markers+text",
            name=origin, marker={"size": 14, "color": _ORIGIN_COLORS.get(origin, "#444"),
                                 "line": {"width": [3 if g in path else 0 for g in part["genome_id"]],
                                          "color": "#0e1117"}},
            text=[g[:6] for g in part["genome_id"]], textposition="top center",
            customdata=list(zip(part["genome_id"], part["origin"], fitness, strict=True)),
            hovertemplate="%{customdata[0]}<br>%{customdata[1]}<br>fitness %{customdata[2]}"
                          "<extra>generation %{x}</extra>"))
    fig.update_layout(title=title, height=460, xaxis={"title": "generation", "dtick": 1}, showlegend=True,
                      yaxis={"visible": False}, legend={"orientation": "h", "y": -0.15})
    return fig
