"""Runs: every run with status, duration and best scores; delete; export Parquet; export the
best adapter."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from coral import analysis
from coral.analysis.best import BEST_DEFINITION, describe
from coral.services import CoralError
from coral.services.dashboard import ACTIVE, best_genome, delete_run, export_adapter, export_parquet, run_times
from coral.services.live import generations_done
from coral.services.text import literal
from pages import empty_state, home, pick_run

st.title("Runs")
table = analysis.list_runs(home())
if table.empty:
    empty_state("run list")
    st.stop()

durations = []
for run_id in table["run_id"]:
    created, updated = run_times(run_id, home())
    durations.append(None if created is None or updated is None else round(updated - created, 1))
table = table.assign(duration_s=durations,
                     updated=pd.to_datetime(table["updated"], unit="s", utc=True))
table = table.iloc[::-1]  # newest first
# Runs the ingestor cannot read (a corrupt checkpoint or event line): the others are ingested.
for bad, reason in table.dropna(subset=["unreadable"])[["run_id", "unreadable"]].itertuples(index=False):
    st.warning(f"Run {bad} cannot be ingested: {literal(reason)}", icon="⚠️")
# Generation numbers are 0-based; "finished" counts finished generations of the configured total.
done = [generations_done(state, generation, total) for state, generation, total
        in zip(table["state"], table["generation"], table["generations"], strict=True)]
table = table.assign(
    finished=[f"{d} / {int(t) if pd.notna(t) else '?'}" for d, t in zip(done, table["generations"], strict=True)],
    running=[str(int(g)) if s in ACTIVE and pd.notna(g) else "-"
             for s, g in zip(table["state"], table["generation"], strict=True)])
# Where each run executes (local, serial, modal) next to its state, visible without scrolling.
columns = ["run_id", "state", "backend", "finished", "running", "best_fitness", "best_evaluations", "duration_s",
           "strategy", "updated"]
# The pick's fresh held-out figure where `coral evaluate` made one (its newest): what to quote.
fresh = analysis.reevaluations(None, home())
if not fresh.empty:
    newest = fresh.drop_duplicates("run_id")[["run_id", "fixed_at_k", "baseline_fixed_at_k"]]
    table = table.merge(newest.rename(columns={"fixed_at_k": "fresh_fixed_at_k"}), on="run_id", how="left")
    columns[6:6] = ["fresh_fixed_at_k", "baseline_fixed_at_k"]
if table["unreadable"].notna().any():
    columns.append("unreadable")
# Narrow columns, so the table fits a 1400 px window next to the sidebar.
small = {name: st.column_config.Column(width="small") for name in columns if name != "run_id"}
st.dataframe(table[columns], hide_index=True, key="runs-table", width="stretch",
             column_config={"run_id": st.column_config.Column("run", width="medium"),
                            "best_fitness": st.column_config.NumberColumn(
                                "best fitness", width="small", format="%.3f", help=BEST_DEFINITION),
                            "best_evaluations": st.column_config.NumberColumn(
                                "n", width="small", format="%d", help="evaluations the best fitness averages"),
                            "fresh_fixed_at_k": st.column_config.NumberColumn(
                                "fresh fixed@k", width="small", format="%.3f",
                                help="the best genome re-evaluated on fresh seeds and held-out instances "
                                     "(`coral evaluate`, Compare runs)"),
                            "baseline_fixed_at_k": st.column_config.NumberColumn(
                                "no adapter", width="small", format="%.3f",
                                help="the untuned model on the same fresh seeds and instances"),
                            "duration_s": st.column_config.NumberColumn("duration (s)", width="small",
                                                                        format="%.0f"),
                            "updated": st.column_config.DatetimeColumn(width="small", format="MMM D, HH:mm"),
                            **{k: v for k, v in small.items()
                               if k not in ("best_fitness", "best_evaluations", "duration_s", "updated",
                                            "fresh_fixed_at_k", "baseline_fixed_at_k")}})
st.caption(f"Best fitness: {BEST_DEFINITION}; the same genome the adapter export, Lineage, "
           "`coral runs` and the notebooks name.")

run_id = pick_run("Selected run", key="runs-picker")
assert run_id is not None  # the table is not empty
left, middle, right = st.columns(3)

with left:
    st.markdown("**Export Parquet**")
    if st.button("Export tables", key="export-parquet"):
        try:
            folder = export_parquet(run_id, home=home())
        except CoralError as exc:
            st.error(str(exc))
        else:
            st.success(f"wrote {', '.join(sorted(p.name for p in folder.iterdir()))} to {folder}")

with middle:
    st.markdown("**Export the best adapter**")
    try:
        best = best_genome(run_id, home())
    except CoralError as exc:
        st.caption(str(exc))
    else:
        st.caption(f"the best genome, {best['genome_id']}: fitness {describe(best)}, last evaluated "
                   f"in generation {best['generation']}")
        out = st.text_input("Destination folder (must not exist)",
                            value=str(home().root / "exports" / run_id / f"adapter-{best['genome_id']}"),
                            key="adapter-out")
        if st.button("Export adapter", key="export-adapter"):
            try:
                st.success(f"exported to {export_adapter(run_id, best['genome_id'], out, home())}")
            except CoralError as exc:
                st.error(str(exc))

with right:
    st.markdown("**Delete**")
    sure = st.checkbox(f"Yes, delete {run_id}", key=f"delete-sure-{run_id}")
    if st.button("Delete run", key="delete-run", disabled=not sure, type="primary"):
        try:
            delete_run(run_id, home())
        except CoralError as exc:
            st.error(str(exc))
        else:
            st.session_state.pop("run_id", None)
            st.toast(f"deleted {run_id}")
            st.rerun()
