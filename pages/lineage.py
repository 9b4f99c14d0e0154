"""Lineage: where a genome came from (parents, how each was made, the generation each was
evaluated in) as a graph, and the path of the run's best genome (the one definition of best,
coral.analysis.best) back to the first generation."""

from __future__ import annotations

import streamlit as st

from coral.analysis.best import BEST_DEFINITION, best_genome, describe
from coral.analysis.lineage import genome_ids, lineage, lineage_chart, missing_parents
from coral.services import CoralError
from pages import empty_state, home, pick_run

st.title("Lineage")
run_id = pick_run()
if run_id is None:
    empty_state("lineage")
    st.stop()

try:
    top = best_genome(run_id, home())
    best = top["genome_id"]
    path = lineage(run_id, best, home())
except CoralError as exc:
    st.info(f"{exc}. The lineage appears once the run's first generation has finished.")
    st.stop()

st.caption("x: the generation a genome was evaluated in; a line joins each parent to its child; "
           "the thick line follows the fitter parent back to a genome that had none (generation 0, "
           "or a fresh random one). Hover a point for its id, origin and fitness (its mean over its "
           f"evaluations). {BEST_DEFINITION}: genome {best}, {describe(top)}.")
missing = missing_parents(run_id, home())
if missing:
    st.warning(f"{len(missing)} genome{'s' if len(missing) != 1 else ''} of this run name a parent that is not "
               "a genome of the run (a run recorded before lineage was fixed): "
               + "; ".join(f"{g} -> {', '.join(p)}" for g, p in list(missing.items())[:5]))
else:
    st.caption("Lineage complete: every parent of every genome of this run is a genome of the run, "
               "back to generation 0.")
ids = genome_ids(run_id, home())
choice = st.selectbox("Genome (default: the run's best)", ids,
                      index=ids.index(best) if best in ids else 0, key=f"lineage-genome-{run_id}")
try:
    frame = path if choice == best else lineage(run_id, choice, home())
except CoralError as exc:
    st.error(str(exc))
    st.stop()
title = f"ancestry of {'the best genome, ' if choice == best else 'genome '}{choice}"
st.plotly_chart(lineage_chart(frame, title), key="lineage-chart")

st.subheader("Path back to the first generation" + (" (the best genome)" if choice == best else ""))
steps = frame[frame["on_path"]].sort_values("depth")
st.dataframe(steps[["depth", "genome_id", "generation", "origin", "fitness", "evaluations", "parents"]],
             hide_index=True, key="lineage-path")
with st.expander(f"All {len(frame)} ancestors"):
    st.dataframe(frame, hide_index=True, key="lineage-table")
