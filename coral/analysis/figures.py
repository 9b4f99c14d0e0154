"""Plotly figures over coral.analysis: the same ones the dashboard shows and notebooks draw."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

from coral import analysis
from coral.analysis.replicates import generation_axis
from coral.errors import CoralError
from coral.home import Home
from coral.store.schema import METRICS, OBJECTIVES

# Curve figures are built from plain dicts in one go.Figure call: Plotly validates each property
# assignment, and building a figure step by step (add_trace, add_hline, update_layout) cost
# ~30 ms a chart. What the browser draws was measured too (Chromium, 2 loaded cores): axis
# automargin, which Streamlit's theme turns on, makes Plotly.js measure and redraw, so margins
# are fixed; and one figure of eight panels (nine since fix_chance) drew faster than eight
# figures (each is a Plotly plot of its own, and Streamlit mounts a new one for each changed spec).
_COLORS = {"best": "#0068c9", "mean": "#83c9ff", "genotype": "#ff2b2b", "phenotype": "#ffabab",
           "cache": "#29b09d"}
_BASELINE = "#7f7f7f"


@dataclass
class _Panel:
    """One curve chart: its traces (no axis references yet), y axis, and baseline value."""

    title: str
    traces: list[dict[str, Any]]
    yaxis: dict[str, Any]
    baseline: float | None = None


def _line(x: list[Any], y: Any, name: str, color: str, group: str | None = None) -> dict[str, Any]:
    trace = {"type": "scatter", "x": x, "y": list(y), "mode": "lines+markers", "name": name,
             "line": {"color": color}, "marker": {"color": color}}
    if group:
        trace["legendgroup"] = group
    return trace


def _fitness_panel(curves: analysis.RunCurves, metric: str) -> _Panel:
    if metric not in METRICS:
        raise CoralError(f"unknown objective {metric!r} (known: {', '.join(METRICS)})")
    data, x = curves.generations, list(curves.generations["generation"])
    traces = [_line(x, data[f"{stat}_{metric}"], f"{stat} {metric}", _COLORS[stat], stat)
              for stat in ("best", "mean")]
    base = curves.baseline
    line = float(base[metric]) if base is not None and base.get(metric) is not None else None
    return _Panel(f"{metric} per generation", traces, {"title": {"text": metric}}, line)


def _diversity_panel(curves: analysis.RunCurves) -> _Panel:
    data, x = curves.generations, list(curves.generations["generation"])
    return _Panel("diversity per generation", [
        _line(x, data["genotype_diversity"], "genotype diversity", _COLORS["genotype"]),
        _line(x, data["phenotype_share"], "distinct objective vectors (share)", _COLORS["phenotype"]),
    ], {"range": [0, 1.05]})


def _cache_panel(curves: analysis.RunCurves) -> _Panel:
    data, x = curves.generations, list(curves.generations["generation"])
    return _Panel("adapter cache hit rate",
                  [_line(x, data["cache_hit_rate"], "adapter cache hit rate", _COLORS["cache"])],
                  {"range": [0, 1.05]})


def _baseline_marks(value: float, x: str = "x", y: str = "y") -> tuple[dict[str, Any], dict[str, Any]]:
    """What fig.add_hline draws: a dashed line across the panel, and its label."""
    shape = {"type": "line", "name": "baseline", "line": {"dash": "dash", "color": _BASELINE},
             "xref": f"{x} domain", "x0": 0, "x1": 1, "yref": y, "y0": value, "y1": value}
    label = {"text": "baseline", "showarrow": False, "xref": f"{x} domain", "x": 1, "xanchor": "right",
             "yref": y, "y": value, "yanchor": "bottom"}
    return shape, label


def _last_x(traces: list[dict[str, Any]]) -> float | None:
    xs = [x for t in traces for x in (t.get("x") or []) if x is not None]
    return max(xs) if xs else None


def _single(panel: _Panel) -> go.Figure:
    # Title at the top, legend below the axis title: they never overlap.
    layout: dict[str, Any] = {
        "title": {"text": panel.title, "y": 0.98, "yanchor": "top"}, "height": 380,
        "margin": {"l": 60, "r": 20, "t": 50, "b": 90},
        "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": -0.22, "yanchor": "top"},
        "xaxis": {"title": {"text": "generation"}, "automargin": False, **generation_axis(_last_x(panel.traces))},
        "yaxis": {**panel.yaxis, "automargin": False}}
    if panel.baseline is not None:
        shape, label = _baseline_marks(panel.baseline)
        layout.update(shapes=[shape], annotations=[label])
    return go.Figure(data=panel.traces, layout=layout)


def _live_panels(curves: analysis.RunCurves) -> list[_Panel]:
    return [_fitness_panel(curves, "fitness"), *(_fitness_panel(curves, name) for name in OBJECTIVES),
            _diversity_panel(curves), _cache_panel(curves)]


def live_chart(curves: analysis.RunCurves, columns: int = 2, panel_height: int = 240) -> go.Figure:
    """The Live page's curves as panels of one figure: weighted fitness, each objective (best and
    mean, the baseline dashed), diversity and adapter cache hits per generation. One legend:
    "best" or "mean" toggles that curve in every panel."""
    panels = _live_panels(curves)
    rows = -(-len(panels) // columns)
    top, bottom, gap = 64, 45, 70  # px: legend and titles; last row's axis title; between rows
    plot = rows * panel_height + (rows - 1) * gap  # the plot area, in px
    hgap = 0.07  # between columns, as a fraction of the width
    width = (1 - hgap * (columns - 1)) / columns
    layout: dict[str, Any] = {
        "height": top + plot + bottom, "margin": {"l": 50, "r": 20, "t": top, "b": bottom},
        # Above the first row's panel titles: y is in plot-area units, so 30 px is 30 / plot.
        "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": 1 + 30 / plot, "yanchor": "bottom"},
        "shapes": [], "annotations": []}
    traces: list[dict[str, Any]] = []
    for index, panel in enumerate(panels):
        row, col = divmod(index, columns)
        suffix = "" if index == 0 else str(index + 1)
        x0 = col * (width + hgap)
        y1 = 1 - row * (panel_height + gap) / plot
        layout[f"xaxis{suffix}"] = {"domain": [x0, x0 + width], "anchor": f"y{suffix}", "automargin": False,
                                    "title": {"text": "generation" if row == rows - 1 else ""},
                                    **generation_axis(_last_x(panel.traces))}
        layout[f"yaxis{suffix}"] = {**panel.yaxis, "title": {"text": ""}, "automargin": False,
                                    "domain": [max(0.0, y1 - panel_height / plot), y1], "anchor": f"x{suffix}"}
        layout["annotations"].append({"text": f"<b>{panel.title}</b>", "showarrow": False, "xref": "paper",
                                      "yref": "paper", "x": x0, "xanchor": "left", "y": y1, "yanchor": "bottom",
                                      "yshift": 4})
        for trace in panel.traces:
            group = trace.get("legendgroup")
            traces.append({**trace, "name": group or trace["name"], "xaxis": f"x{suffix}",
                           "yaxis": f"y{suffix}", "showlegend": group is None or index == 0})
        if panel.baseline is not None:
            shape, label = _baseline_marks(panel.baseline, f"x{suffix}", f"y{suffix}")
            layout["shapes"].append(shape)
            layout["annotations"].append(label)
    return go.Figure(data=traces, layout=layout)


def fitness_chart(curves: analysis.RunCurves, metric: str = "fitness") -> go.Figure:
    """Best and mean of one metric per generation, the untuned baseline as a dashed line."""
    return _single(_fitness_panel(curves, metric))


def diversity_chart(curves: analysis.RunCurves) -> go.Figure:
    return _single(_diversity_panel(curves))


def cache_chart(curves: analysis.RunCurves) -> go.Figure:
    return _single(_cache_panel(curves))


def live_figure(run_id: str, home: Home | None = None) -> go.Figure:
    """live_chart from one read of the store (analysis.run_curves)."""
    return live_chart(analysis.run_curves(run_id, home))


def fitness_figure(run_id: str, metric: str = "fitness", home: Home | None = None) -> go.Figure:
    """Best and mean of one metric per generation, the untuned baseline as a dashed line."""
    if metric not in METRICS:  # before the read: a clear error for a typo
        raise CoralError(f"unknown objective {metric!r} (known: {', '.join(METRICS)})")
    return fitness_chart(analysis.run_curves(run_id, home), metric)


def diversity_figure(run_id: str, home: Home | None = None) -> go.Figure:
    return diversity_chart(analysis.run_curves(run_id, home))


def cache_figure(run_id: str, home: Home | None = None) -> go.Figure:
    return cache_chart(analysis.run_curves(run_id, home))


def pareto_figure(run_id: str, generation: int, objectives: Sequence[str] = ("bugfix", "style"),
                  home: Home | None = None) -> go.Figure:
    """A generation's genomes on 2 or 3 objectives; the Pareto front highlighted."""
    names = list(objectives)
    points = analysis.pareto(run_id, generation, names, home)
    fig = go.Figure()
    # The front is what matters: dark and large; dominated genomes light and small behind it.
    styles = {False: ("dominated", "#a9c4e0", 7), True: ("Pareto front", "#08306b", 11)}
    for on_front in (False, True):
        label, color, size = styles[on_front]
        part = points[points["on_front"] == on_front]
        marker = {"color": color, "size": size if len(names) == 2 else size * 0.6}
        if len(names) == 2:
            fig.add_trace(go.Scatter(x=part[names[0]], y=part[names[1]], mode="markers", name=label,
                                     text=part["genome_id"], marker=marker))
        else:
            fig.add_trace(go.Scatter3d(x=part[names[0]], y=part[names[1]], z=part[names[2]],
                                       mode="markers", name=label, text=part["genome_id"], marker=marker))
    if len(names) == 2:
        fig.update_layout(xaxis_title=names[0], yaxis_title=names[1])
    else:
        fig.update_layout(scene={"xaxis_title": names[0], "yaxis_title": names[1], "zaxis_title": names[2]},
                          height=720, margin={"l": 0, "r": 0, "t": 50, "b": 0})
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
    last = curves["generation"].max() if not curves.empty else None
    fig.update_layout(title=f"{metric}: run comparison", xaxis={"title": "generation", **generation_axis(last)},
                      yaxis_title=metric)
    return fig
