"""Each genome's result as it lands: the points of a run's progress record (coral/run/progress.py)
as a table and a Plotly scatter. The store has these scores too, but only once their generation
has finished; the Live page draws them the moment a genome's last test is in. A point is one
evaluation: a survivor evaluated again in a later generation gets a point there too, while the
store records its mean over evaluations (docs/engine.md)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

from coral.home import Home
from coral.run.progress import read_progress

GENERATION_COLORS = ("#0068c9", "#ff8700", "#29b09d", "#ff2b2b", "#6d3fc0", "#7defa1", "#ffd16a",
                     "#83c9ff")
SHOWN_GENERATIONS = 8  # the newest this many generations get a colour each; older ones are grey


def genome_points(run_id: str, home: Home | None = None) -> pd.DataFrame:
    """One row per scored genome, in landing order: generation, genome, seconds (since the run
    started), fitness and each objective. Empty when the run has no progress record."""
    progress = read_progress(home or Home(), run_id)
    return points_frame(progress)


def points_frame(progress: dict[str, Any] | None) -> pd.DataFrame:
    if not progress or not progress.get("genomes"):
        return pd.DataFrame(columns=["generation", "genome", "seconds", "fitness"])
    frame = pd.DataFrame(progress["genomes"])
    frame["seconds"] = frame.pop("at") - float(progress["started"])
    return frame


def genomes_chart(points: pd.DataFrame, running: int | None = None, height: int = 320) -> go.Figure:
    """Fitness of each genome against the time it was scored, one colour per generation; the
    running generation's points drawn larger."""
    traces: list[dict[str, Any]] = []
    if not points.empty:
        generations = sorted(points["generation"].unique())
        recent = generations[-SHOWN_GENERATIONS:]
        older = points[~points["generation"].isin(recent)]
        if not older.empty:
            traces.append(_trace(older, "earlier generations", "#c8c8c8", 6))
        for index, generation in enumerate(recent):
            part = points[points["generation"] == generation]
            label = f"generation {generation}" + (" (running)" if generation == running else "")
            color = GENERATION_COLORS[index % len(GENERATION_COLORS)]
            traces.append(_trace(part, label, color, 11 if generation == running else 7))
    # Title at the top, legend under the x-axis title: the two never overlap. An empty chart
    # (no genome scored yet) is drawn too, so the browser has Plotly loaded before the first point.
    layout = {"height": height + 40, "margin": {"l": 50, "r": 20, "t": 40, "b": 85},
              "title": {"text": "each genome's fitness as it lands (one point per evaluation)", "y": 0.98,
                        "yanchor": "top"},
              "xaxis": {"title": {"text": "seconds since the run started"}, "automargin": False,
                        "rangemode": "tozero"},
              "yaxis": {"title": {"text": "fitness"}, "automargin": False, "range": [-0.02, 1.02]},
              "legend": {"orientation": "h", "x": 0, "y": -0.3, "yanchor": "top"}}
    return go.Figure(data=traces, layout=layout)


def _trace(part: pd.DataFrame, name: str, color: str, size: int) -> dict[str, Any]:
    return {"type": "scatter", "mode": "markers", "name": name, "x": list(part["seconds"]),
            "y": list(part["fitness"]), "text": list(part["genome"]),
            "marker": {"color": color, "size": size},
            "hovertemplate": "%{text}: fitness %{y:.3f} at %{x:.0f} s<extra></extra>"}
