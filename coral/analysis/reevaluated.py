"""Runs' picks re-evaluated on fresh seeds (`coral evaluate`, coral.run.reevaluation), by replicate
group: what the Compare page's "Re-evaluated" section and notebooks show.

`evaluate_runs` picks each run's best genome (coral.analysis.best) and re-evaluates it.
`reevaluation_summary` reads the store's `reevaluations` table: per replicate group (the groups of
coral.analysis.replicates), the mean over its replicates' seeds of the pick's fresh fixed@k with a
95% Student-t interval (from MIN_BAND seeds on), the untuned model's on the same seeds, and their
difference paired by seed; and between groups that share seeds (evolution against random search
of one config), the difference paired by seed, and paired by instance and seed (the finer SE:
both picks answered the same instances under the same seeds). A run whose pick was not
re-evaluated, or not with the setting shown, is named with the command that would.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from itertools import combinations
from typing import Any

import duckdb
import pandas as pd
import plotly.graph_objects as go

from coral.analysis.queries import connect, mean_se
from coral.analysis.replicates import _PALETTE, METRIC_RANGE, MIN_BAND, replicate_groups, t95
from coral.errors import CoralError
from coral.home import Home

MEASURES = {"fixed_at_k": "all instances", "withheld_fixed_at_k": "the classes the base withheld"}
SETTING = ("evaluated_on", "samples", "fresh", "instances")


def evaluate_runs(run_ids: Sequence[str], *, fresh: int = 2, samples: int = 5, on: str = "held-out",
                  home: Home | None = None, log: Callable[[str], None] | None = None) -> Iterator[dict[str, Any]]:
    """Re-evaluate each run's best genome (coral.analysis.best.best_genome); the model is loaded
    once per distinct model. Yields, as each run is done, its pick and the file written (in a
    notebook: `list(evaluate_runs([...]))`)."""
    from coral.analysis.best import best_genome
    from coral.model.loading import load_base_model
    from coral.run.reevaluation import read_reevaluation, reevaluate
    from coral.run.registry import run_config

    home = home or Home()
    configs = {run: run_config(home, run) for run in run_ids}
    picks = {run: best_genome(run, home) for run in run_ids}  # every id checked before any work
    bases: dict[str, Any] = {}
    for run in run_ids:
        model = configs[run].model
        key = model.model_dump_json()
        if key not in bases:
            bases = {key: load_base_model(model)}  # one model in memory at a time
        path = reevaluate(home, run, picks[run], fresh=fresh, samples=samples, on=on, log=log, base=bases[key])
        record = read_reevaluation(path)
        yield {"run_id": run, "genome_id": record.genome_id, "path": path,
               "fixed_at_k": record.model.fixed_at_k, "baseline_fixed_at_k": record.baseline.fixed_at_k,
               "instances": len(record.instances), "seconds": record.wall_seconds}


def reevaluations(run_ids: Sequence[str] | None = None, home: Home | None = None) -> pd.DataFrame:
    """Every stored re-evaluation of these runs (all when None), newest first."""
    with connect(home) as con:
        try:
            frame = con.execute("SELECT * FROM reevaluations ORDER BY created DESC").df()
        except duckdb.CatalogException:  # a snapshot written before schema version 6: none stored yet
            return pd.DataFrame(columns=["run_id", *SETTING])
    if run_ids is not None:
        frame = frame[frame["run_id"].isin(list(run_ids))]
    return frame.reset_index(drop=True)


def _setting_text(row: Any) -> str:
    return (f"{row['instances']} {row['evaluated_on']} instances, {row['fresh']} fresh seed"
            f"{'s' if row['fresh'] != 1 else ''}, k = {row['samples']}")


def _arguments(row: Any) -> dict[str, Any]:
    """The setting as `coral evaluate`'s arguments (coral.run.reevaluation.start_background's)."""
    return {"on": str(row["evaluated_on"]), "samples": int(row["samples"]), "fresh": int(row["fresh"])}


def _interval(values: list[float]) -> tuple[float, float, float, float]:
    """mean, SE, and the 95% interval clipped to the metric range (NaN below MIN_BAND values)."""
    mean, se = mean_se(values)
    if len(values) < MIN_BAND:
        return mean, (se if len(values) > 1 else math.nan), math.nan, math.nan
    half = t95(len(values) - 1) * se
    low, high = METRIC_RANGE
    return mean, se, max(low, mean - half), min(high, mean + half)


def _z(mean: float, se: float) -> float:
    return mean / se if se > 0 else math.nan


def reevaluation_summary(run_ids: Sequence[str], home: Home | None = None,
                         measure: str = "fixed_at_k") -> dict[str, Any]:
    """{"setting": text or None, "arguments": the setting as `coral evaluate` arguments or None,
    "groups": DataFrame (group, label, n, seeds, mean, se, lo, hi,
    baseline, baseline_lo, baseline_hi, vs_baseline, vs_baseline_se, vs_baseline_z), "differences":
    DataFrame (a, b, label_a, label_b, seeds, by_seed, by_seed_se, by_seed_z, by_instance,
    by_instance_se, by_instance_z), "runs": the rows used (run_id, group, seed, value, baseline),
    "missing": [(run_id, why)]}. `measure`: a MEASURES key."""
    if measure not in MEASURES:
        raise CoralError(f"unknown re-evaluation measure {measure!r} (known: {', '.join(MEASURES)})")
    groups = replicate_groups(run_ids, home)
    stored = reevaluations(list(groups["run_id"]), home)
    empty = {"setting": None, "arguments": None, "measure": measure, "groups": pd.DataFrame(),
             "differences": pd.DataFrame(), "runs": pd.DataFrame()}
    if stored.empty:
        return {**empty, "missing": [(r, "not re-evaluated: `coral evaluate " + r + "`") for r in groups["run_id"]]}
    # The setting most of the chosen runs were re-evaluated with (ties: the newest).
    counts = stored.drop_duplicates(["run_id", *SETTING]).groupby(list(SETTING), sort=False).size()
    setting = counts.idxmax()
    chosen = stored[(stored[list(SETTING)] == pd.Series(setting, index=list(SETTING))).all(axis=1)]
    chosen = chosen.drop_duplicates("run_id")  # newest first: each run's latest of that setting
    rows = groups.merge(chosen, on="run_id", how="inner")
    missing = []
    for run_id, counted, why in zip(groups["run_id"], groups["counted"], groups["why"], strict=True):
        if run_id not in set(chosen["run_id"]):
            other = stored[stored["run_id"] == run_id]
            missing.append((run_id, "re-evaluated with another setting only ("
                            + _setting_text(other.iloc[0]) + ")" if not other.empty
                            else f"not re-evaluated: `coral evaluate {run_id}`"))
        elif not counted:
            missing.append((run_id, f"not a replicate: {why}"))
    rows = rows[rows["counted"]]
    if measure == "withheld_fixed_at_k" and rows["withheld"].fillna(0).max() == 0:
        return {**empty, "setting": _setting_text(chosen.iloc[0]), "arguments": _arguments(chosen.iloc[0]),
                "missing": [*missing, *((r, "its base model withheld no bug class") for r in rows["run_id"])]}
    solved = {r: (json.loads(a), json.loads(b), json.loads(w), json.loads(n)) for r, a, b, w, n in zip(
        rows["run_id"], rows["solved"], rows["baseline_solved"], rows["withheld_names"], rows["instance_names"],
        strict=True)}
    table = pd.DataFrame({"run_id": rows["run_id"], "group": rows["group"], "label": rows["label"],
                          "seed": rows["seed"], "genome_id": rows["genome_id"],
                          "value": rows[measure], "baseline": rows[f"baseline_{measure}"]})
    out_groups = []
    # Groups by label (evolution before random search), so a difference reads evolution - random.
    for (label, group), part in table.groupby(["label", "group"], sort=True):
        values, base = list(part["value"]), list(part["baseline"])
        mean, se, lo, hi = _interval(values)
        bmean, _, blo, bhi = _interval(base)
        dmean, dse = mean_se([v - b for v, b in zip(values, base, strict=True)])
        out_groups.append({"group": group, "label": label, "n": len(values),
                           "seeds": ", ".join(str(s) for s in sorted(part["seed"])), "mean": mean, "se": se,
                           "lo": lo, "hi": hi, "baseline": bmean, "baseline_lo": blo, "baseline_hi": bhi,
                           "vs_baseline": dmean, "vs_baseline_se": dse, "vs_baseline_z": _z(dmean, dse)})
    differences = []
    labels = dict(zip(table["group"], table["label"], strict=False))
    for a, b in combinations([g["group"] for g in out_groups], 2):
        left = table[table["group"] == a].set_index("seed")
        right = table[table["group"] == b].set_index("seed")
        shared = sorted(set(left.index) & set(right.index))
        if len(shared) < 2:
            continue
        by_seed = [float(left.loc[s, "value"] - right.loc[s, "value"]) for s in shared]
        per_instance: list[float] = []
        for seed in shared:
            sa, _, wa, na = solved[left.loc[seed, "run_id"]]
            sb, _, _, nb = solved[right.loc[seed, "run_id"]]
            if na != nb:
                per_instance = []
                break
            index = [na.index(n) for n in wa] if measure == "withheld_fixed_at_k" else range(len(na))
            per_instance += [sa[i] - sb[i] for i in index]
        mean, se = mean_se(by_seed)
        imean, ise = mean_se(per_instance) if per_instance else (math.nan, math.nan)
        differences.append({"a": a, "b": b, "label_a": labels[a], "label_b": labels[b], "seeds": len(shared),
                            "by_seed": mean, "by_seed_se": se, "by_seed_z": _z(mean, se),
                            "by_instance": imean, "by_instance_se": ise, "by_instance_z": _z(imean, ise)})
    return {"setting": _setting_text(chosen.iloc[0]), "arguments": _arguments(chosen.iloc[0]), "measure": measure,
            "groups": pd.DataFrame(out_groups),
            "differences": pd.DataFrame(differences), "runs": table, "missing": missing}


def reevaluation_chart(summary: dict[str, Any]) -> go.Figure:
    """Per group, its picks' mean and the untuned model's on the same seeds, side by side, with the
    95% interval over seeds (from MIN_BAND seeds on); each run's pick a dot."""
    groups, runs = summary["groups"], summary["runs"]
    fig = go.Figure()
    if groups.empty:
        return fig
    names = [f"{label} [{group}]<br>n = {n}" for group, label, n in zip(groups["group"], groups["label"],
                                                                        groups["n"], strict=True)]

    def bars(mean: str, lo: str, hi: str, name: str, color: str) -> go.Bar:
        plus = [h - m if h == h else None for m, h in zip(groups[mean], groups[hi], strict=True)]
        minus = [m - low if low == low else None for m, low in zip(groups[mean], groups[lo], strict=True)]
        return go.Bar(x=names, y=list(groups[mean]), name=name, marker_color=color,
                      error_y={"type": "data", "array": plus, "arrayminus": minus, "visible": True},
                      hovertemplate="%{y:.3f}<extra>" + name + "</extra>")

    fig.add_trace(bars("mean", "lo", "hi", "the run's pick", _PALETTE[0]))
    fig.add_trace(bars("baseline", "baseline_lo", "baseline_hi", "no adapter, same seeds", "#9aa0a6"))
    position = dict(zip(groups["group"], names, strict=True))
    fig.add_trace(go.Scatter(x=[position[g] for g in runs["group"]], y=list(runs["value"]), mode="markers",
                             marker={"color": "#1f2937", "size": 7, "symbol": "circle-open"},
                             name="each run's pick", customdata=list(zip(runs["run_id"], runs["seed"], strict=True)),
                             hovertemplate="%{customdata[0]} (seed %{customdata[1]}): %{y:.3f}<extra></extra>"))
    measure = summary["measure"]
    fig.update_layout(barmode="group", height=460, margin={"t": 60},
                      title={"text": f"fresh fixed@k on {MEASURES[measure]}: {summary['setting']}", "y": 0.97},
                      yaxis={"title": "fixed@k", "rangemode": "tozero"},
                      legend={"orientation": "h", "y": -0.25})
    return fig
