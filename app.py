"""CORAL dashboard entry point: `streamlit run app.py` (binds 127.0.0.1 via .streamlit/config.toml).

A thin shell over `coral`: every value shown comes from a coral function.
"""

from pathlib import Path

import streamlit as st

from coral.config import find_configs

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

st.set_page_config(page_title="CORAL", layout="wide")
st.title("CORAL")
st.caption("Evolve LoRA adapters and generation knobs for a code-repair model.")

st.subheader("Configs")
rows = []
for path, config, error in find_configs(CONFIG_DIR):
    rows.append({
        "config": path.name,
        "valid": error is None,
        "strategy": config.strategy if config else "",
        "population": config.population if config else None,
        "generations": config.generations if config else None,
        "model": config.model.name if config else "",
        "problem": error or "",
    })
if rows:
    st.dataframe(rows, hide_index=True, width="stretch")
else:
    st.info(f"No configs found in {CONFIG_DIR}. Copy configs/local.yaml there to start.")
