"""Launch: pick a config, edit the main values, start `coral run --detach` (returns at once);
several seeds of one config in one go (replicates); the expected duration before starting."""

from __future__ import annotations

import streamlit as st

from coral.services import CoralError, Home
from coral.services.backends import sizes_its_pool
from coral.services.dashboard import CONFIG_DIR, LaunchRequest, choices, config_files, launch_run
from coral.services.live import DEFAULT_CONFIG, duration_words, expected_seconds, preflight
from pages import COMPARE_PAGE, LIVE_PAGE, MODAL_DOUBLE, home, job_bodies

st.title("Launch a run")
st.caption("The run is a separate process: it goes on when this page or the dashboard closes.")

configs = config_files()
if not configs:
    st.info(f"No configs in {CONFIG_DIR}. Copy configs/{DEFAULT_CONFIG} back there to start.")
    st.stop()

names = [path.name for path, _ in configs]
# The quick config by default: its first genome is plotted within about 30 s on 2 cores.
default = names.index(DEFAULT_CONFIG) if DEFAULT_CONFIG in names else 0
name = st.selectbox("Config", names, index=default, key="launch_config")
path, problem = configs[names.index(name)]
if problem:
    st.error(problem)
    st.stop()
base = LaunchRequest.from_config(path)

strategies, backends = choices("strategy"), choices("backend.kind")
# No form: the Workers field follows the backend, and the expected duration follows every value.
# Widget keys carry the config name, so picking another config shows that config's values.
left, right = st.columns(2)
# No min/max on the inputs: coral.config owns the limits and explains a bad value.
population = left.number_input("Population", value=base.population, step=1, key=f"population-{name}")
generations = left.number_input("Generations", value=base.generations, step=1,
                                key=f"generations-{name}")
seed = left.number_input("Seed", value=base.seed, step=1, key=f"seed-{name}")
strategy = left.selectbox("Strategy", strategies, index=strategies.index(base.strategy),
                          key=f"strategy-{name}")
backend = right.selectbox("Backend", backends, index=backends.index(base.backend), key=f"backend-{name}")
workers = right.number_input("Workers (local backend)", value=base.workers, step=1, key=f"workers-{name}",
                             disabled=not sizes_its_pool(backend),
                             help="Worker processes on this machine; Modal scales its own.")
model = right.text_input("Model (hub id or local path)", value=base.model, key=f"model-{name}")
replicates = right.number_input("Replicates (seeds)", value=1, min_value=1, max_value=20, step=1,
                                key=f"replicates-{name}",
                                help="Runs of this config with seeds Seed, Seed+1, ...: the Compare "
                                     "page groups them and draws their mean with a 95% band.")

@st.cache_data(ttl=30, show_spinner=False)
def _check(request: LaunchRequest, home_root: str) -> tuple[str | None, float, str]:
    """(the one-line problem, or None; expected seconds; where its job times come from)."""
    try:
        config = request.validate()
        preflight(config)
    except CoralError as exc:
        return str(exc), 0.0, ""
    return None, *expected_seconds(config, Home(home_root))


request = base.with_values(population=int(population), generations=int(generations), seed=int(seed),
                           strategy=strategy, backend=backend, workers=int(workers), model=model.strip())
problem, seconds, source = _check(request, str(home().root))
if problem:
    st.error(problem)
else:
    many = f" each; {int(replicates)} runs side by side share the machine" if replicates > 1 else ""
    st.caption(f"Expected duration: about {duration_words(seconds)}{many} (from {source}).")

if st.button("Start run" if replicates == 1 else f"Start {int(replicates)} runs", type="primary",
             disabled=problem is not None, key="start-run"):
    launched: list[str] = []
    try:
        for offset in range(int(replicates)):
            launched.append(launch_run(request.with_values(seed=int(seed) + offset, bodies=job_bodies()),
                                       home(), modal_double=MODAL_DOUBLE))
    except CoralError as exc:
        st.error(f"{exc}" + (f" (started before the error: {', '.join(launched)})" if launched else ""))
    else:
        st.session_state["run_id"] = launched[0]
        if len(launched) > 1:
            # Compare adds each to its selection as it registers (they are not registered yet).
            st.session_state["compare-runs"] = []
            st.session_state["compare-pending"] = launched
            st.switch_page(COMPARE_PAGE)
        st.switch_page(LIVE_PAGE)

with st.expander("All configs"):
    st.dataframe([{"config": p.name, "valid": e is None, "problem": e or ""} for p, e in configs],
                 hide_index=True)
