"""Compare runs: overlaid curves, final metrics, and the config keys that differ."""

from __future__ import annotations

import streamlit as st

from coral import analysis
from coral.analysis import figures
from coral.errors import CoralError
from coral.store.schema import METRICS
from pages import empty_state, home, run_ids

st.title("Compare runs")
ids = run_ids()
if not ids:
    empty_state("comparison")
    st.stop()

chosen = st.multiselect("Runs", ids, default=ids[:2], key="compare-runs")
metric = st.selectbox("Metric", METRICS, index=METRICS.index("fitness"), key="compare-metric")
if not chosen:
    st.info("Pick one or more runs to compare.")
    st.stop()
try:
    result = analysis.compare_runs(chosen, metric, home())
    fig = figures.compare_figure(chosen, metric, home())
except CoralError as exc:
    st.info(f"{exc}. A run appears here once the store has ingested its first events.")
    st.stop()

st.plotly_chart(fig, key="compare-chart")
st.subheader("Final metrics (last generation)")
st.dataframe(result["final"], hide_index=True, key="compare-final")
st.subheader("Config keys that differ")
if result["config_diff"]:
    rows = [{"key": key, **{run: str(value) for run, value in values.items()}}
            for key, values in result["config_diff"].items()]
    st.dataframe(rows, hide_index=True, key="compare-diff")
else:
    st.write("The configs are identical." if len(chosen) > 1 else "Pick a second run to diff.")
