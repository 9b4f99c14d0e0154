"""Pareto & genomes: a generation's front on 2 or 3 objectives; one genome in detail."""

from __future__ import annotations

import numpy as np
import streamlit as st

from coral import analysis
from coral.analysis import figures
from coral.services.dashboard import METRICS, candidate_diff, genome_table, scored_generations
from pages import empty_state, home, pick_run

st.title("Pareto front & genomes")
run_id = pick_run()
if run_id is None:
    empty_state("Pareto front")
    st.stop()

generations = scored_generations(run_id, home())
if not generations:
    st.info("No generation of this run is in the store yet: the front appears when the first "
            "one finishes (the store catches up within seconds).")
    st.stop()

left, right = st.columns([1, 2])
generation = left.select_slider("Generation", generations, value=generations[-1]) \
    if len(generations) > 1 else generations[0]
view = left.radio("View", ["2-D", "3-D"], horizontal=True)
defaults = ["bugfix", "style", "security"]
objectives = [left.selectbox(f"Objective {axis}", METRICS, index=METRICS.index(default),
                             key=f"objective-{axis}")
              for axis, default in zip("xyz", defaults[:2 if view == "2-D" else 3], strict=False)]
if len(set(objectives)) < len(objectives):
    left.warning("Pick different objectives for each axis.")
else:
    right.plotly_chart(figures.pareto_figure(run_id, generation, objectives, home()),
                       key="pareto-chart")
    hv = analysis.front_hypervolume(run_id, generation, objectives, home=home())
    left.metric("Hypervolume (reference: origin)", f"{hv:.4f}")

table = genome_table(run_id, generation, home())
st.subheader(f"Genomes of generation {generation}")
st.caption(f"Scores as of generation {generation}: each genome's mean over its evaluations so far "
           "(evaluations: how many), fittest first. The run's best genome over all generations is "
           f"on the Runs page ({analysis.BEST_DEFINITION}).")
st.dataframe(table, hide_index=True, key="genome-table")

genome_id = st.selectbox("Genome", list(table["genome_id"]), key="genome")
detail = analysis.genome_detail(run_id, genome_id, home())
st.subheader(f"Genome {genome_id}")
cols = st.columns([1, 1, 2])
if detail["ca_final"] is not None:
    # Cells as pixels, scaled up so the pattern is visible: white = alive.
    for column, key, caption in ((cols[0], "ca_initial", "CA seed grid"),
                                 (cols[1], "ca_final", f"after the run (rule {detail['rule']})")):
        grid = (np.asarray(detail[key]) > 0).astype(np.uint8) * 255
        column.image(np.kron(grid, np.ones((8, 8), dtype=np.uint8)), caption=caption)
    cols[2].write({"genes": detail["genes"], "knobs": detail["knobs"], "origin": detail["origin"],
                   "parents": detail["parents"]})
else:
    cols[2].info("Genes and CA pattern appear once the generation's checkpoint is ingested.")

problems = detail["problems"]
problems = problems[problems["generation"] == generation] if not problems.empty else problems
st.markdown("**Per-problem results**")
st.dataframe(problems.drop(columns=["candidate", "raw", "cases"], errors="ignore"),
             hide_index=True, key="problem-table")
if not problems.empty:
    pick = st.selectbox("Generated code for", [f"{p} (sample {s})" for p, s in
                                               zip(problems["problem"], problems["sample"],
                                                   strict=True)], key="code-problem")
    row = problems.iloc[[f"{p} (sample {s})" for p, s in
                         zip(problems["problem"], problems["sample"], strict=True)].index(pick)]
    st.code(candidate_diff(run_id, row["problem"], row["candidate"], home()), language="diff")
