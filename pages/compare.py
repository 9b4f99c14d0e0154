"""Compare runs: replicates (runs of one config, different seeds) grouped, their mean over seeds
with a 95% band and the untuned baseline; or each run's own curves; final metrics; the config
keys that differ. Says which chosen runs it left out, and why."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from coral import analysis
from coral.analysis import figures
from coral.analysis.replicates import STATS, replicate_chart, replicate_curves, replicate_groups
from coral.errors import CoralError
from coral.store.schema import METRICS
from pages import empty_state, home, run_ids

st.title("Compare runs")
ids = run_ids()
if not ids:
    empty_state("comparison")
    st.stop()


def _default(ids: list[str]) -> list[str]:
    """The newest run's replicate group when it has several runs, else the two newest runs."""
    try:
        groups = replicate_groups(None, home())
    except CoralError:
        return ids[:2]
    newest = groups[groups["run_id"].isin(ids)].sort_values("run_id").tail(1)
    if not newest.empty:
        same = groups[groups["group"] == newest["group"].iloc[0]]["run_id"].tolist()
        if len(same) > 1:
            return [r for r in ids if r in same]
    return ids[:2]


if "compare-runs" in st.session_state:  # a launch of replicates, or an earlier choice
    st.session_state["compare-runs"] = [r for r in st.session_state["compare-runs"] if r in ids]
chosen = st.multiselect("Runs", ids, default=None if "compare-runs" in st.session_state else _default(ids),
                        key="compare-runs")
left, middle, right = st.columns([2, 1, 1])
metric = left.selectbox("Metric", METRICS, index=METRICS.index("fitness"), key="compare-metric")
stat = middle.radio("Per generation", STATS, horizontal=True, key="compare-stat",
                    help="best: the best genome of each generation; mean: the population mean")
grouped = right.toggle("Group replicates", value=True, key="compare-grouped",
                       help="Runs whose configs differ only in seed (and backend) form one group: "
                            "their mean over seeds, with a 95% interval band")
if not chosen:
    st.info("Pick one or more runs to compare.")
    st.stop()

stored = analysis.list_runs(home())
in_store = set(stored.loc[stored["last_event"].notna(), "run_id"]) if "last_event" in stored else set()
left_out = [(r, "not in the store yet (it is ingested within seconds of registering)")
            for r in chosen if r not in in_store]
present = [r for r in chosen if r in in_store]
try:
    result = replicate_curves(present, metric, stat, home()) if present else None
except CoralError as exc:
    st.error(str(exc))
    st.stop()
if result is not None:
    left_out += result["left_out"]
    drawable = [r for r in present if r not in {run for run, _ in result["left_out"]}]
else:
    drawable = []
if left_out:
    st.info("Left out of the chart: " + "; ".join(f"{r} ({why})" for r, why in left_out))
if result is None or not drawable:
    st.warning("None of the chosen runs has a finished generation to compare yet.")
    st.stop()

if grouped:
    st.plotly_chart(replicate_chart(result), key="compare-chart")
    groups = result["groups"]
    groups = groups[groups["run_id"].isin(drawable)]
    summary = (groups.groupby(["group", "label"], as_index=False)
               .agg(runs=("run_id", "count"), seeds=("seed", lambda s: ", ".join(map(str, sorted(s)))),
                    generations_done=("generations_done", "min")))
    summary["baseline"] = [result["baselines"].get(g) for g in summary["group"]]
    st.subheader("Replicate groups")
    st.dataframe(summary, hide_index=True, key="compare-groups")
    if (summary["runs"] < 2).any():
        st.caption("A group with one run has no interval: launch more seeds of its config "
                   "(Launch page, Replicates).")
else:
    st.plotly_chart(figures.compare_figure(drawable, metric, home()), key="compare-chart")

compared = analysis.compare_runs(drawable, metric, home())
st.subheader("Final metrics (last finished generation)")
st.dataframe(compared["final"], hide_index=True, key="compare-final")
st.subheader("Config keys that differ")
if compared["config_diff"]:
    rows = [{"key": key, **{run: str(value) for run, value in values.items()}}
            for key, values in compared["config_diff"].items()]
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="compare-diff")
else:
    st.write("The configs are identical." if len(drawable) > 1 else "Pick a second run to diff.")
