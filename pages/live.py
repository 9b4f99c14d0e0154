"""Live run: status, the running generation's progress, controls, each genome as it lands, and
per-generation curves; all refresh by themselves."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import streamlit as st

from coral import analysis
from coral.analysis import figures
from coral.analysis.live import genomes_chart, points_frame
from coral.services import CoralError, Home
from coral.services.dashboard import (
    ACTIVE,
    CONTROL_REQUESTS,
    STAGES,
    launch_state,
    queue_depths,
    request_control,
    run_error,
    run_times,
)
from coral.services.live import RATE_WINDOW, duration_words, live_view, read_progress, run_info, waiting_note
from coral.services.text import literal
from pages import empty_state, home, ingestor, pick_run

REFRESH_SECONDS = 1.0  # status, progress and buttons
CHART_SECONDS = 0.5  # the chart: a cheap check; rebuilt only when a snapshot changed the curves

st.title("Live run")


@st.fragment(run_every=0.5)
def launching(run_id: str) -> None:
    """A run just launched registers within seconds (its launcher loads the benchmark first)."""
    state = launch_state(run_id, home())
    if state.state == "failed to start":
        st.error(f"run {run_id} failed to start: {literal(state.message)}")
    elif state.state == "launching":
        st.info(state.message)
        # An empty genome chart while the run registers: the browser loads Plotly meanwhile.
        st.plotly_chart(genomes_chart(points_frame(None), None), key="launch-genomes")
    else:
        st.rerun(scope="app")


chosen = st.session_state.get("run_id")
if chosen is not None and not home().run_config(chosen).exists():
    if not home().run_dir(chosen).is_dir():
        st.session_state.pop("run_id")  # deleted meanwhile
    elif launch_state(chosen, home()).state == "failed to start":
        st.error(f"run {chosen} failed to start: {literal(launch_state(chosen, home()).message)}")
        st.session_state.pop("run_id")
    else:
        launching(chosen)
        st.stop()
run_id = pick_run()
if run_id is None:
    empty_state("live run")
    st.stop()


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


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s ago" if seconds < 90 else f"{seconds / 60:.0f} min ago"


def _rate(value: float | None) -> str:
    return "" if value is None else f" · {value:.1f}/s over the last {RATE_WINDOW:.0f} s"


_TIME_LEFT_HELP = ("From this run's measured job times once every stage has finished a job; before that, "
                   "the config's expected duration (the Launch page's figure) less the run's age.")


def _time_left(view: Any) -> str:
    """Paused only when paused; while starting or before job times are measured, the expected figure."""
    if view.info.state == "paused":
        return "paused"
    if view.seconds_left is None:
        return "estimating"
    words = duration_words(view.seconds_left)
    return f"about {words} (expected)" if view.estimate_source == "expected" else words


@st.fragment(run_every=REFRESH_SECONDS)
def live(run_id: str) -> None:
    view = live_view(run_id, home())
    info = view.info
    cols = st.columns(5)
    cols[0].metric("State", info.state)
    # Generation numbers are 0-based everywhere (charts, store, CLI); finished ones are counted.
    cols[1].metric("Running generation", "-" if view.running_generation is None else view.running_generation)
    cols[2].metric("Generations finished", f"{view.finished_generations} / {info.generations or '?'}")
    if view.active:
        cols[3].metric("Time left (estimate)", _time_left(view), help=_TIME_LEFT_HELP)
    else:  # every column keeps a metric, so the next one never shows blank while the layout changes
        created, _ = run_times(run_id, home())
        took = (None if created is None or view.last_update is None
                else duration_words(max(0.0, view.last_update - float(created))))
        cols[3].metric("Duration", took or "-")
    if view.last_update is not None:
        if view.active:
            cols[4].metric("Last update", _ago(max(0.0, time.time() - view.last_update)))
        else:
            ended = datetime.fromtimestamp(view.last_update, tz=UTC).strftime("%H:%M:%S")
            cols[4].metric(f"{info.state.capitalize()} at (UTC)", ended)
    if info.state == "failed":
        st.error(f"run failed: {literal(run_error(run_id, home()) or 'no error recorded')}")
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

    if not view.active:
        return
    if info.state == "paused" and view.stages:
        finishing = view.finishing()
        st.warning(f"Paused: no job of this run starts until Continue. Still running (started "
                   f"before the pause): {finishing['running']}; held unstarted by workers: "
                   f"{finishing['held']}; queued: {finishing['queued']}.", icon=":material/pause:")
    if view.stages:
        g = view.running_generation
        for stage in STAGES:
            counts = view.stages[stage]
            done, total = counts.get("done", 0) + counts.get("failed", 0), counts.get("total", 0)
            text = (f"generation {g} · {stage}: {done}/{total} jobs{_rate(view.rates.get(stage))}"
                    f"{waiting_note(counts)}")
            st.progress(min(1.0, done / total) if total else 1.0, text=text)
        scored = view.generation_genomes()
        if scored:
            fitness = [x["fitness"] for x in scored]
            st.caption(f"Generation {g} so far: {len(scored)} genome{'s' if len(scored) != 1 else ''} "
                       f"scored; best fitness {max(fitness):.3f}, mean {sum(fitness) / len(fitness):.3f}")
    else:
        st.caption("Starting: loading the model and the benchmark, starting workers.")
    depths = queue_depths(run_id, home())
    st.caption("Queued jobs (every run's): " + ", ".join(f"{k} {v}" for k, v in depths.items()))


@st.cache_resource(max_entries=32, show_spinner=False)
def _genomes_figure(run_id: str, digest: tuple[Any, ...], _points: pd.DataFrame, running: int | None) -> Any:
    return genomes_chart(_points, running)


# The chart in its own fragment: a slow rebuild never delays the status and the buttons above.
# It runs often because it is cheap when nothing changed: one cached lookup per snapshot, and
# the cached figure re-sent (its spec is unchanged, so the browser does not redraw it).
@st.fragment(run_every=CHART_SECONDS)
def charts(run_id: str) -> None:
    # Each genome as it lands, straight from the engine's progress record (no store round trip).
    progress = read_progress(home(), run_id)
    points = points_frame(progress)
    info = run_info(home(), run_id)
    running = info.generation if info.state in ACTIVE else None
    if not points.empty:
        digest = (len(points), float(points["seconds"].iloc[-1]), running)
        st.plotly_chart(_genomes_figure(run_id, digest, points, running), key="live-genomes")
    elif info.state in ACTIVE:
        # The empty chart, drawn at once: the browser loads Plotly now, so the first genome's
        # point shows the moment it lands instead of after the bundle loads.
        st.plotly_chart(_genomes_figure(run_id, (0, 0.0, running), points, running), key="live-genomes")
        st.caption("No genome scored yet: each genome is plotted the moment its last test is in.")
    try:
        fig = _figure(run_id, ingestor().last_snapshot_time)
    except CoralError as exc:
        fig, why = None, f" ({exc})"
    else:
        why = ""
    if fig is not None:
        st.plotly_chart(fig, key="live-curves")
    elif info.state in ACTIVE:
        st.info(f"No generation in the store yet{why}: the per-generation curves appear when "
                "generation 0 finishes.")
    else:
        st.info(f"This run {info.state} before its first generation finished{why}, so it has no "
                "per-generation curves.")


live(run_id)
charts(run_id)
