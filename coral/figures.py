"""Plotly figures over coral.analysis: the same ones the dashboard shows and notebooks draw."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from coral import analysis
from coral.errors import CoralError
from coral.home import Home


def fitness_figure(run_id: str, metric: str = "fitness", home: Home | None = None) -> go.Figure:
    """Best and mean of one metric per generation, the untuned baseline as a dashed line."""
    curves = analysis.fitness_curves(run_id, [metric], home)
    fig = go.Figure()
    for stat in ("best", "mean"):
        part = curves[curves["stat"] == stat]
        fig.add_trace(go.Scatter(x=part["generation"], y=part["value"], mode="lines+markers",
                                 name=f"{stat} {metric}"))
    base = analysis.baseline(run_id, home)
    if base is not None and base.get(metric) is not None:
        fig.add_hline(y=float(base[metric]), line_dash="dash", annotation_text="baseline",
                      name="baseline")
    fig.update_layout(title=f"{metric} per generation", xaxis_title="generation", yaxis_title=metric)
    return fig


def diversity_figure(run_id: str, home: Home | None = None) -> go.Figure:
    data = analysis.diversity_curves(run_id, home)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=data["generation"], y=data["genotype_diversity"], mode="lines+markers",
                             name="genotype diversity"))
    fig.add_trace(go.Scatter(x=data["generation"], y=data["phenotype_share"], mode="lines+markers",
                             name="distinct objective vectors (share)"))
    fig.update_layout(title="diversity per generation", xaxis_title="generation", yaxis_range=[0, 1.05])
    return fig


def cache_figure(run_id: str, home: Home | None = None) -> go.Figure:
    data = analysis.cache_curve(run_id, home)
    fig = go.Figure(go.Scatter(x=data["generation"], y=data["cache_hit_rate"], mode="lines+markers",
                               name="adapter cache hit rate"))
    fig.update_layout(title="adapter cache hit rate", xaxis_title="generation", yaxis_range=[0, 1.05])
    return fig


def pareto_figure(run_id: str, generation: int, objectives: Sequence[str] = ("bugfix", "style"),
                  home: Home | None = None) -> go.Figure:
    """A generation's genomes on 2 or 3 objectives; the Pareto front highlighted."""
    names = list(objectives)
    points = analysis.pareto(run_id, generation, names, home)
    fig = go.Figure()
    for on_front, label in ((False, "dominated"), (True, "Pareto front")):
        part = points[points["on_front"] == on_front]
        if len(names) == 2:
            fig.add_trace(go.Scatter(x=part[names[0]], y=part[names[1]], mode="markers", name=label,
                                     text=part["genome_id"]))
        else:
            fig.add_trace(go.Scatter3d(x=part[names[0]], y=part[names[1]], z=part[names[2]],
                                       mode="markers", name=label, text=part["genome_id"]))
    if len(names) == 2:
        fig.update_layout(xaxis_title=names[0], yaxis_title=names[1])
    else:
        fig.update_layout(scene={"xaxis_title": names[0], "yaxis_title": names[1], "zaxis_title": names[2]})
    fig.update_layout(title=f"generation {generation}: {' vs '.join(names)}")
    return fig


def compare_figure(run_ids: Sequence[str], metric: str = "fitness", home: Home | None = None) -> go.Figure:
    if not run_ids:
        raise CoralError("compare_figure needs at least one run id")
    result = analysis.compare_runs(run_ids, metric, home)
    curves = result["curves"]
    fig = go.Figure()
    for run_id in dict.fromkeys(run_ids):
        part = curves[curves["run_id"] == run_id]
        fig.add_trace(go.Scatter(x=part["generation"], y=part["best"], mode="lines+markers",
                                 name=f"{run_id} best"))
        fig.add_trace(go.Scatter(x=part["generation"], y=part["mean"], mode="lines", name=f"{run_id} mean",
                                 line={"dash": "dot"}))
    fig.update_layout(title=f"{metric}: run comparison", xaxis_title="generation", yaxis_title=metric)
    return fig
