"""CORAL dashboard entry point: `streamlit run app.py` or `coral dashboard` (127.0.0.1 by default).

A thin shell: pages call `coral.services.dashboard` (launch, control, manage runs) and `coral.analysis`
(queries and Plotly figures, the same ones notebooks use). This process owns the store's single
writer, the ingestor thread, through one process-wide `st.cache_resource`.
"""

from __future__ import annotations

import streamlit as st

from pages import ingestor

st.set_page_config(page_title="CORAL", layout="wide")
ingestor()  # started once per process; every session shares it

PAGES = [
    st.Page("pages/launch.py", title="Launch", icon=":material/rocket_launch:", default=True),
    st.Page("pages/live.py", title="Live run", icon=":material/monitoring:"),
    st.Page("pages/pareto.py", title="Pareto & genomes", icon=":material/scatter_plot:"),
    st.Page("pages/compare.py", title="Compare runs", icon=":material/compare_arrows:"),
    st.Page("pages/lineage.py", title="Lineage", icon=":material/account_tree:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/list:"),
]
st.navigation(PAGES).run()
