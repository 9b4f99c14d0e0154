"""Replicates: runs of one config that differ only in their seed, grouped and summarised.

A claim about a config needs several seeds: `replicate_curves` gives, per group and generation,
the mean over seeds of a per-generation statistic with a 95% interval (Student's t over the
seeds that reached that generation, clipped to [0, 1], the range of every metric), and the
group's mean baseline (the untuned model). Groups are found from the configs themselves
(`config_group`), so runs launched from the CLI group with runs launched from the dashboard.

A replicate is a finished run with a seed of its own: a run that is still going, stopped or
failed, or that repeats the seed of an earlier run of its group (same seed, same config: the
same numbers, not a new sample) is not counted; it is drawn apart, marked with why. With n = 2
the t quantile is 12.7 and the interval too wide to read, so a band is drawn from n = 3 on
(MIN_BAND). The same tables feed the Compare page and notebooks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from coral.config import Config
from coral.errors import CoralError
from coral.hashing import content_hash
from coral.home import Home
from coral.store.schema import METRICS

# Keys that do not change what a run computes: the seed is what replicates vary; where jobs run
# (backend: serial, local workers, Modal; modal: its app and volume names) gives identical
# results (`coral validate`).
NOT_SCIENCE = ("seed", "backend", "modal")
# Two-sided 95% Student's t quantiles by degrees of freedom; beyond 30 the normal 1.96 is
# within 2%. (No scipy dependency for one table.)
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
STATS = ("best", "mean")
# Every metric (objectives, fixed@k, weighted fitness) lies in [0, 1] (docs/objectives.md).
METRIC_RANGE = (0.0, 1.0)
# Seeds below which a 95% interval is not drawn: t(0.975, 1) = 12.7 makes it wider than the range.
MIN_BAND = 3


def generation_axis(last_generation: int | float | None) -> dict[str, Any]:
    """x-axis ticks on whole generations (never 0.5): every generation up to ten, then a round step."""
    last = 0 if last_generation is None or last_generation != last_generation else int(last_generation)
    step = 1 if last < 10 else int(math.ceil((last + 1) / 10))
    return {"tick0": 0, "dtick": step}


def t95(df: int) -> float:
    if df < 1:
        raise CoralError("a 95% interval needs at least two seeds")
    return _T95[df - 1] if df <= len(_T95) else 1.96


def config_group(config: dict[str, Any]) -> str:
    """The replicate group of a resolved config: a hash of everything but NOT_SCIENCE, keys the
    run's CORAL did not have yet counted at their defaults (with_defaults)."""
    return content_hash({k: v for k, v in with_defaults(config).items() if k not in NOT_SCIENCE})[:10]


def with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config with the keys it lacks, at top level and within sections, at today's
    defaults. A key is added with the default that does what runs did before it existed
    (training.data: instances), so a config run before and after groups as one. Values that
    are themselves mappings (objectives.weights) are kept whole: their missing keys mean what
    the product makes of them, not a default."""
    filled = dict(config)
    for key, default in _defaults().items():
        if key not in filled:
            filled[key] = default
        elif isinstance(default, dict) and isinstance(filled[key], dict):  # a section: one level
            filled[key] = {**{k: v for k, v in default.items() if k not in filled[key]}, **filled[key]}
    return filled


def _defaults() -> dict[str, Any]:
    return Config().model_dump(mode="json")


def group_label(config: dict[str, Any]) -> str:
    model = str((config.get("model") or {}).get("name", "?")).rstrip("/").rsplit("/", 1)[-1]
    return (f"{config.get('strategy', '?')}, population {config.get('population', '?')}, "
            f"{config.get('generations', '?')} generations, {model}")


def replicate_groups(run_ids: str | Sequence[str] | None = None, home: Home | None = None) -> pd.DataFrame:
    """Runs with their replicate group: run_id, group, label, seed, state, generations_done,
    counted (a replicate: finished, with a seed no earlier run of its group has) and why (the
    reason it is not counted, else None). Every run in the store when run_ids is None; an id the
    store does not know is an error. Which run of a repeated seed counts does not depend on the
    selection: the earliest finished one of the whole store."""
    from coral.analysis.queries import connect, run_id_list

    with connect(home) as con:
        frame = con.execute("SELECT run_id, config, state, generations_done FROM runs "
                            "ORDER BY run_id").df()
    if run_ids is not None:
        wanted = run_id_list(run_ids)
        missing = [r for r in wanted if r not in set(frame["run_id"])]
        if missing:
            raise CoralError(f"no run {missing[0]!r} in the store (not ingested yet, or a wrong id)")
    configs = [json.loads(c) if c else {} for c in frame["config"]]
    out = pd.DataFrame({
        "run_id": frame["run_id"], "group": [config_group(c) for c in configs],
        "label": [group_label(c) for c in configs], "seed": [c.get("seed") for c in configs],
        "state": frame["state"], "generations_done": frame["generations_done"].fillna(0).astype(int),
    })
    first_of_seed: dict[tuple[str, Any], str] = {}
    why: list[str | None] = []
    for run_id, group, seed, state, done in zip(out["run_id"], out["group"], out["seed"], out["state"],
                                                out["generations_done"], strict=True):
        if state != "finished":
            why.append(_not_finished(state, int(done)))
        elif (group, seed) in first_of_seed:
            why.append(f"seed {seed} repeats run {first_of_seed[(group, seed)]}")
        else:
            first_of_seed[(group, seed)] = run_id
            why.append(None)
    out["counted"] = [w is None for w in why]
    out["why"] = why
    if run_ids is not None:
        out = out.set_index("run_id").loc[wanted].reset_index()
    return out


def _clip(value: float, low: float, high: float) -> float:
    return value if math.isnan(value) else min(high, max(low, value))


def _not_finished(state: str, done: int) -> str:
    if state in ("running", "paused", "starting"):
        return f"{state}: counted once it finishes"
    return f"{state} after {done} generation{'s' if done != 1 else ''}"


def replicate_curves(run_ids: Sequence[str], metric: str = "fitness", stat: str = "best",
                     home: Home | None = None) -> dict[str, Any]:
    """Per replicate group and generation: seeds (n, replicates only: `replicate_groups`
    counted), mean, 95% interval (lo, hi, clipped to METRIC_RANGE; NaN with one seed) of
    `stat`_`metric` over the group's replicates; each chosen run that is not a replicate, drawn
    apart with why; the group's mean baseline for the metric; and the runs left out (no finished
    generation in the store) with the reason.

    Returns {"curves": DataFrame(group, label, generation, n, mean, lo, hi),
             "apart": DataFrame(run_id, group, label, generation, value, why),
             "groups": replicate_groups(...), "baselines": {group: value or None},
             "narrow": {group: max n} for groups with fewer than MIN_BAND replicates,
             "left_out": [(run_id, why)]}.
    """
    from coral.analysis.queries import connect

    if metric not in METRICS:
        raise CoralError(f"unknown objective {metric!r} (known: {', '.join(METRICS)})")
    if stat not in STATS:
        raise CoralError(f"unknown statistic {stat!r} (known: {', '.join(STATS)})")
    if not run_ids:
        raise CoralError("replicate_curves needs at least one run id")
    groups = replicate_groups(run_ids, home)
    ids = list(groups["run_id"])
    with connect(home) as con:
        values = con.execute(f"SELECT run_id, generation, {stat}_{metric} AS value FROM generations "
                             "WHERE list_contains(?, run_id) ORDER BY run_id, generation", [ids]).df()
        base = con.execute(f"SELECT run_id, {metric} AS value FROM baselines "
                           "WHERE list_contains(?, run_id)", [ids]).df()
    have = set(values["run_id"])
    left_out = [(r, f"{s}: no finished generation in the store yet" if s in ("running", "paused", "starting")
                 else f"{s} before its first generation finished")
                for r, s in zip(groups["run_id"], groups["state"], strict=True) if r not in have]
    merged = values.merge(groups[["run_id", "group", "label", "counted", "why"]], on="run_id")
    low, high = METRIC_RANGE
    rows = []
    for (group, label, generation), part in merged[merged["counted"]].groupby(["group", "label", "generation"],
                                                                                sort=True):
        n, mean = len(part), float(part["value"].mean())
        half = t95(n - 1) * float(part["value"].std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
        rows.append({"group": group, "label": label, "generation": int(generation), "n": n,
                     "mean": mean, "lo": _clip(mean - half, low, high), "hi": _clip(mean + half, low, high)})
    curves = pd.DataFrame(rows, columns=["group", "label", "generation", "n", "mean", "lo", "hi"])
    apart = merged.loc[~merged["counted"], ["run_id", "group", "label", "generation", "value", "why"]]
    base = base.merge(groups[["run_id", "group", "counted"]], on="run_id")
    base = base[base["counted"]]
    baselines = {g: (float(part["value"].mean()) if part["value"].notna().any() else None)
                 for g, part in base.groupby("group")}
    narrow = {str(g): int(part["n"].max()) for g, part in curves.groupby("group") if part["n"].max() < MIN_BAND}
    return {"metric": metric, "stat": stat, "curves": curves, "apart": apart.reset_index(drop=True),
            "groups": groups, "baselines": baselines, "narrow": narrow, "left_out": left_out}


_PALETTE = ("#0068c9", "#ff2b2b", "#29b09d", "#ff8700", "#7defa1", "#6d3fc0", "#d5dae5", "#83c9ff")


def _rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def replicate_chart(result: dict[str, Any]) -> go.Figure:
    """Each group's mean over its replicates as a line labelled with n, its 95% interval as a band
    (from MIN_BAND seeds on), its baseline dashed; runs that are not replicates dotted, apart."""
    curves = result["curves"]
    apart = result.get("apart")
    fig = go.Figure()
    colors: dict[str, str] = {}
    for index, group in enumerate(sorted(set(curves["group"]) | set([] if apart is None else apart["group"]))):
        colors[group] = _PALETTE[index % len(_PALETTE)]
    for group, part in curves.groupby("group", sort=True):
        color = colors[group]
        seeds = int(part["n"].max())
        name = f"{part['label'].iloc[0]} (n = {seeds} seed{'s' if seeds != 1 else ''}) [{group}]"
        x = list(part["generation"])
        band = part[part["n"] >= MIN_BAND].dropna(subset=["lo", "hi"])
        if not band.empty:
            bx = list(band["generation"])
            fig.add_trace(go.Scatter(x=bx + bx[::-1], y=list(band["hi"]) + list(band["lo"])[::-1],
                                     fill="toself", fillcolor=_rgba(color, 0.2), line={"width": 0},
                                     hoverinfo="skip", legendgroup=group, showlegend=True,
                                     name=f"95% interval, n = {int(band['n'].min())}"
                                          + (f"-{int(band['n'].max())}" if band["n"].nunique() > 1 else "")
                                          + f" [{group}]"))
        fig.add_trace(go.Scatter(x=x, y=list(part["mean"]), mode="lines+markers", name=name,
                                 legendgroup=group, line={"color": color},
                                 customdata=list(part["n"]),
                                 hovertemplate="generation %{x}: %{y:.3f} (n = %{customdata} seeds)"))
        base = result["baselines"].get(group)
        if base is not None:
            fig.add_trace(go.Scatter(x=[min(x), max(x)], y=[base, base], mode="lines",
                                     line={"color": color, "dash": "dash"}, legendgroup=group,
                                     name=f"baseline [{group}]"))
    if apart is not None:
        for run_id, part in apart.groupby("run_id", sort=True):
            fig.add_trace(go.Scatter(
                x=list(part["generation"]), y=list(part["value"]), mode="lines+markers",
                line={"color": colors.get(str(part["group"].iloc[0]), "#7f7f7f"), "dash": "dot", "width": 1},
                marker={"symbol": "x", "size": 7}, name=f"{run_id}: not counted ({part['why'].iloc[0]})",
                hovertemplate="generation %{x}: %{y:.3f}<extra>" + str(run_id) + "</extra>"))
    fig.update_layout(title={"text": f"{result['stat']} {result['metric']}: mean over seeds, 95% interval",
                             "y": 0.97},
                      xaxis={"title": "generation", **generation_axis(_last_generation(result))},
                      yaxis={"title": f"{result['stat']} {result['metric']}"},
                      height=480, legend={"orientation": "h", "y": -0.2}, margin={"t": 60})
    return fig


def _last_generation(result: dict[str, Any]) -> int | None:
    frames = [f["generation"] for f in (result["curves"], result.get("apart")) if f is not None and not f.empty]
    return max(int(f.max()) for f in frames) if frames else None


def too_wide_note(result: dict[str, Any]) -> str | None:
    """The sentence a page shows when a group has fewer than MIN_BAND replicates, else None."""
    narrow = result.get("narrow") or {}
    if not narrow:
        return None
    labels = dict(zip(result["curves"]["group"], result["curves"]["label"], strict=True))
    parts = [f"{labels.get(g, g)} [{g}]: n = {n}" for g, n in sorted(narrow.items())]
    return ("Too few replicates for an interval: " + "; ".join(parts) + f". Below n = {MIN_BAND} seeds "
            "the 95% interval is too wide to read (with n = 2 it is the mean ± 12.7 standard errors), "
            "so no band is drawn; launch more seeds of the config (Launch page, Replicates).")


def replicate_figure(run_ids: Sequence[str], metric: str = "fitness", stat: str = "best",
                     home: Home | None = None) -> go.Figure:
    return replicate_chart(replicate_curves(run_ids, metric, stat, home))
