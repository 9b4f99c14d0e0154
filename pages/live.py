"""Live run: status, stage progress, queues, controls, and charts that refresh by themselves."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pandas as pd
import streamlit as st

from coral import analysis
from coral.analysis import figures
from coral.errors import CoralError
from coral.home import Home
from coral.run.registry import ACTIVE, run_info
from coral.services.dashboard import (
    CONTROL_REQUESTS,
    STAGES,
    launch_state,
    queue_depths,
    request_control,
    run_error,
    stage_progress,
)
from pages import empty_state, home, ingestor, pick_run

REFRESH_SECONDS = 1.0  # status, progress and buttons
CHART_SECONDS = 0.5  # the chart: a cheap check; rebuilt only when a snapshot changed the curves

st.title("Live run")


@st.fragment(run_every=0.5)
def launching(run_id: str) -> None:
    """A run just launched registers within seconds (its launcher loads the benchmark first)."""
    state = launch_state(run_id, home())
    if state.state == "failed to start":
        st.error(f"run {run_id} failed to start: {state.message}")
    elif state.state == "launching":
        st.info(state.message)
    else:
        st.rerun(scope="app")


chosen = st.session_state.get("run_id")
if chosen is not None and not home().run_config(chosen).exists():
    if not home().run_dir(chosen).is_dir():
        st.session_state.pop("run_id")  # deleted meanwhile
    elif launch_state(chosen, home()).state == "failed to start":
        st.error(f"run {chosen} failed to start: {launch_state(chosen, home()).message}")
        st.session_state.pop("run_id")
    else:
        launching(chosen)
        st.stop()
run_id = pick_run()
if run_id is None:
    empty_state("live run")
    st.stop()


def _throughput(run_id: str, done: int) -> float | None:
    """Test jobs finished per second since the previous refresh (this browser session)."""
    now = time.monotonic()
    last = st.session_state.get(f"tp-{run_id}")
    st.session_state[f"tp-{run_id}"] = (now, done)
    if last is None or done < last[1] or now <= last[0]:
        return None  # first look, or a new generation reset the counts
    return (done - last[1]) / (now - last[0])


@st.cache_resource(max_entries=32, show_spinner=False)
def _curves(run_id: str, home_root: str, snapshot_time: float) -> analysis.RunCurves:
    # One read per run and snapshot, shared by every open tab.
    return analysis.run_curves(run_id, Home(home_root))


@st.cache_resource(max_entries=32, show_spinner=False)
def _chart(run_id: str, digest: str, _curves: analysis.RunCurves) -> Any:
    return figures.live_chart(_curves)


def _digest(curves: analysis.RunCurves) -> str:
    """What the chart shows, hashed. A new snapshot (any ingested event makes one) mostly leaves
    the curves as they were (they change when a generation finishes): then the figure is reused."""
    rows = pd.util.hash_pandas_object(curves.generations, index=False).to_numpy().tobytes()
    base = json.dumps(curves.baseline, sort_keys=True, default=str).encode()
    return hashlib.blake2b(rows + base, digest_size=16).hexdigest()


def _figure(run_id: str, snapshot_time: float | None) -> Any:
    """The chart, rebuilt only when the curves changed; None while no generation finished."""
    if snapshot_time is None:  # no snapshot yet: analysis reads the logs, always fresh
        curves = analysis.run_curves(run_id, home())
    else:
        curves = _curves(run_id, str(home().root), snapshot_time)
    if curves.generations.empty:
        return None
    return _chart(run_id, _digest(curves), curves)


@st.fragment(run_every=REFRESH_SECONDS)
def live(run_id: str) -> None:
    info = run_info(home(), run_id)
    gen = "-" if info.generation is None else info.generation + 1
    cols = st.columns(4)
    cols[0].metric("State", info.state)
    cols[1].metric("Generation", f"{gen} / {info.generations or '?'}")
    lag = ingestor().lag_seconds
    cols[2].metric("Store snapshot age", "-" if lag is None else f"{lag:.1f} s")
    if info.state == "failed":
        st.error(f"run failed: {run_error(run_id, home()) or 'no error recorded'}")
    if info.state == "interrupted":
        st.warning(f"the orchestrator is gone; `coral resume {run_id}` continues from the last "
                   "checkpoint")

    buttons = st.columns(len(CONTROL_REQUESTS))
    enabled = {"pause": info.state == "running", "continue": info.state == "paused",
               "stop": info.state in ACTIVE}
    for column, request in zip(buttons, CONTROL_REQUESTS, strict=True):
        if column.button(request.capitalize(), key=f"{request}-{run_id}",
                         disabled=not enabled[request], width="stretch"):
            try:
                st.toast(request_control(run_id, request, home()))
            except CoralError as exc:
                st.error(str(exc))

    if info.state in ACTIVE:
        progress = stage_progress(run_id, home())
        for stage in STAGES:
            done, total = progress.get(stage, (0, 0))
            st.progress(done / total if total else 0.0, text=f"{stage}: {done}/{total} jobs")
        depths = queue_depths(run_id, home())
        rate = _throughput(run_id, progress.get("test", (0, 0))[0])
        cols[3].metric("Test jobs / s", "-" if rate is None else f"{rate:.1f}")
        st.caption("Queued jobs: " + ", ".join(f"{k} {v}" for k, v in depths.items()))


# The chart in its own fragment: a slow rebuild never delays the status and the buttons above.
# It runs often because it is cheap when nothing changed: one cached lookup per snapshot, and
# the cached figure re-sent (its spec is unchanged, so the browser does not redraw it).
@st.fragment(run_every=CHART_SECONDS)
def charts(run_id: str) -> None:
    try:
        fig = _figure(run_id, ingestor().last_snapshot_time)
    except CoralError as exc:
        fig, why = None, f" ({exc})"
    else:
        why = ""
    if fig is None:
        st.info(f"No generation in the store yet{why}. Charts appear when the first generation "
                "finishes.")
        return
    st.plotly_chart(fig, key="live-curves")


live(run_id)
charts(run_id)
