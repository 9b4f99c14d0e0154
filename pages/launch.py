"""Launch: pick a config, edit the main values, start `coral run --detach` (returns at once)."""

from __future__ import annotations

import streamlit as st

from coral.errors import CoralError
from coral.services.dashboard import CONFIG_DIR, LaunchRequest, choices, config_files, launch_run
from pages import LIVE_PAGE, home, job_handlers

st.title("Launch a run")
st.caption("The run is a separate process: it goes on when this page or the dashboard closes.")

configs = config_files()
if not configs:
    st.info(f"No configs in {CONFIG_DIR}. Copy configs/local.yaml back there to start.")
    st.stop()

names = [path.name for path, _ in configs]
default = names.index("local.yaml") if "local.yaml" in names else 0
name = st.selectbox("Config", names, index=default, key="launch_config")
path, problem = configs[names.index(name)]
if problem:
    st.error(problem)
    st.stop()
base = LaunchRequest.from_config(path)

strategies, backends = choices("strategy"), choices("backend.kind")
# Widget keys carry the config name, so picking another config shows that config's values.
with st.form(f"launch-{name}"):
    left, right = st.columns(2)
    # No min/max on the inputs: coral.config owns the limits and explains a bad value.
    population = left.number_input("Population", value=base.population, step=1,
                                   key=f"population-{name}")
    generations = left.number_input("Generations", value=base.generations, step=1,
                                    key=f"generations-{name}")
    seed = left.number_input("Seed", value=base.seed, step=1, key=f"seed-{name}")
    strategy = left.selectbox("Strategy", strategies, index=strategies.index(base.strategy),
                              key=f"strategy-{name}")
    backend = right.selectbox("Backend", backends, index=backends.index(base.backend),
                              key=f"backend-{name}")
    workers = right.number_input("Workers (local backend)", value=base.workers, step=1,
                                 key=f"workers-{name}")
    model = right.text_input("Model (hub id or local path)", value=base.model, key=f"model-{name}")
    submitted = st.form_submit_button("Start run", type="primary")

if submitted:
    request = base.with_values(population=int(population), generations=int(generations),
                               seed=int(seed), strategy=strategy, backend=backend,
                               workers=int(workers), model=model.strip())
    try:
        run_id = launch_run(request, home(), handlers=job_handlers())
    except CoralError as exc:
        st.error(str(exc))
    else:
        st.session_state["run_id"] = run_id
        st.switch_page(LIVE_PAGE)

with st.expander("All configs"):
    st.dataframe([{"config": p.name, "valid": e is None, "problem": e or ""} for p, e in configs],
                 hide_index=True)
