"""Live run: status, stage progress, queues, controls, and charts that refresh by themselves."""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from coral import figures
from coral.dashboard import (
    CONTROL_REQUESTS,
    STAGES,
    launch_state,
    queue_depths,
    request_control,
    run_error,
    stage_progress,
)
from coral.errors import CoralError
from coral.runs import ACTIVE, run_info
from coral.store_schema import OBJECTIVES
from pages import empty_state, home, ingestor, pick_run

REFRESH_SECONDS = 1.0  # status, progress and buttons
CHART_SECONDS = 1.0  # charts: rebuilt only when the ingestor has written a new snapshot

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


def _build(run_id: str) -> list[Any]:
    return [figures.fitness_figure(run_id, "fitness", home()),
            *(figures.fitness_figure(run_id, name, home()) for name in OBJECTIVES),
            figures.diversity_figure(run_id, home()), figures.cache_figure(run_id, home())]


@st.cache_resource(max_entries=32, show_spinner=False)
def _cached(run_id: str, home_root: str, snapshot_time: float) -> list[Any]:
    return _build(run_id)


def _figures(run_id: str, snapshot_time: float | None) -> list[Any]:
    """The charts change only when the ingestor writes a new snapshot: build them once per
    snapshot, not on every refresh of every open browser tab."""
    if snapshot_time is None:  # no snapshot yet: analysis reads the logs, always fresh
        return _build(run_id)
    return _cached(run_id, str(home().root), snapshot_time)


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


# Charts in their own fragment: a slow rebuild (a new snapshot) never delays the status and
# the buttons above, and between snapshots a refresh only re-sends the cached figures.
@st.fragment(run_every=CHART_SECONDS)
def charts(run_id: str) -> None:
    try:
        figs = _figures(run_id, ingestor().last_snapshot_time)
    except CoralError as exc:
        st.info(f"No generation in the store yet ({exc}). Charts appear when the first "
                "generation finishes.")
        return
    for start in range(0, len(figs), 2):
        for column, fig in zip(st.columns(2), figs[start:start + 2], strict=False):
            column.plotly_chart(fig, key=f"chart-{start}-{fig.layout.title.text}")


live(run_id)
charts(run_id)
