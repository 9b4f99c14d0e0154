"""Compare runs: replicates (finished runs of one config, distinct seeds) grouped, their mean over
seeds with a 95% band (n >= 3) and the untuned baseline; runs that are not replicates (still
going, stopped, failed, a repeated seed) drawn apart and marked; or each run's own curves; final
metrics; the config keys that differ. Says which chosen runs it left out, and why. Runs launched
together from the Launch page join the selection as each registers."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import streamlit as st

from coral import analysis
from coral.analysis import figures
from coral.analysis.reevaluated import MEASURES as REEVALUATED
from coral.analysis.reevaluated import reevaluation_chart, reevaluation_summary
from coral.analysis.replicates import (
    MIN_BAND,
    STATS,
    replicate_chart,
    replicate_curves,
    replicate_groups,
    too_wide_note,
)
from coral.services import CoralError
from coral.services.dashboard import METRICS, launch_state, reevaluation_job, start_reevaluation
from pages import empty_state, home, run_ids

st.title("Compare runs")
ids = run_ids()
if not ids:
    empty_state("comparison")
    st.stop()


def _default(ids: list[str]) -> list[str]:
    """The newest run's replicate group when it has several runs, else the two newest runs."""
    try:
        groups = replicate_groups(None, home())
    except CoralError:
        return ids[:2]
    newest = groups[groups["run_id"].isin(ids)].sort_values("run_id").tail(1)
    if not newest.empty:
        same = groups[groups["group"] == newest["group"].iloc[0]]["run_id"].tolist()
        if len(same) > 1:
            return [r for r in ids if r in same]
    return ids[:2]


# Runs just launched together (Launch page, Replicates): each joins the selection the moment its
# run folder registers; until then the page says it is waiting and looks again every second.
pending = list(st.session_state.get("compare-pending") or [])
waiting: list[str] = []
failed: list[str] = []
if pending:
    chosen_now = [r for r in st.session_state.get("compare-runs") or [] if r in ids]
    for run_id in pending:
        if run_id in ids:
            chosen_now += [run_id] if run_id not in chosen_now else []
            continue
        try:
            launch = launch_state(run_id, home())
        except CoralError:  # its folder is not there yet
            waiting.append(run_id)
            continue
        if launch.state == "failed to start":
            failed.append(f"{run_id} ({launch.message})")
        else:
            waiting.append(run_id)
    st.session_state["compare-runs"] = chosen_now
    st.session_state["compare-pending"] = waiting
    for line in failed:
        st.error(f"Launched run {line} failed to start.")
elif "compare-runs" in st.session_state:  # an earlier choice
    st.session_state["compare-runs"] = [r for r in st.session_state["compare-runs"] if r in ids]
if waiting:
    st.info(f"Waiting for {len(waiting)} launched run{'s' if len(waiting) != 1 else ''} to register: "
            + ", ".join(waiting))
chosen = st.multiselect("Runs", ids, default=None if "compare-runs" in st.session_state else _default(ids),
                        key="compare-runs")
left, middle, right = st.columns([2, 1, 1])
metric = left.selectbox("Metric", METRICS, index=METRICS.index("fitness"), key="compare-metric")
stat = middle.radio("Per generation", STATS, horizontal=True, key="compare-stat",
                    help="best: the best genome of each generation; mean: the population mean")
grouped = right.toggle("Group replicates", value=True, key="compare-grouped",
                       help="Runs whose configs differ only in seed (and backend) form one group: "
                            "their mean over seeds, with a 95% interval band")

stored = analysis.list_runs(home())


def _wait_for_launched() -> None:
    """Look again in a second while launched runs have not registered yet, and every 3 s while a
    chosen run is still going (its curves grow as its generations finish)."""
    if waiting:
        time.sleep(1.0)
        st.rerun()
    if st.session_state.get("compare-reevaluating"):  # a re-evaluation started here is running
        time.sleep(3.0)
        st.rerun()
    if chosen:
        rows = stored.set_index("run_id")
        # Still going, or ended but its last events not ingested yet (the final generation).
        going = [r for r in chosen if r in rows.index and (
            rows.loc[r, "state"] in ("starting", "running", "paused")
            or (rows.loc[r, "state"] in ("finished", "stopped", "failed")
                and rows.loc[r, "last_event"] not in ("run_finished", "run_stopped", "run_failed")))]
        if going:
            time.sleep(3.0)
            st.rerun()


if not chosen:
    if not waiting:
        st.info("Pick one or more runs to compare.")
    _wait_for_launched()
    st.stop()

in_store = set(stored.loc[stored["last_event"].notna(), "run_id"]) if "last_event" in stored else set()
left_out = [(r, "not in the store yet (it is ingested within seconds of registering)")
            for r in chosen if r not in in_store]
present = [r for r in chosen if r in in_store]
try:
    result = replicate_curves(present, metric, stat, home()) if present else None
except CoralError as exc:
    st.error(str(exc))
    st.stop()
if result is not None:
    left_out += result["left_out"]
    drawable = [r for r in present if r not in {run for run, _ in result["left_out"]}]
else:
    drawable = []
if left_out:
    st.info("Left out of the chart: " + "; ".join(f"{r} ({why})" for r, why in left_out))
if result is None or not drawable:
    st.warning("None of the chosen runs has a finished generation to compare yet.")
    _wait_for_launched()
    st.stop()

assert result is not None  # some run is drawable
if grouped:
    st.plotly_chart(replicate_chart(result), key="compare-chart")
    note = too_wide_note(result)
    if note:
        st.warning(note)
    groups = result["groups"]
    groups = groups[groups["run_id"].isin(drawable)]
    counted = groups[groups["counted"]]
    summary = (counted.groupby(["group", "label"], as_index=False)
               .agg(replicates=("run_id", "count"), seeds=("seed", lambda s: ", ".join(map(str, sorted(s)))),
                    generations_done=("generations_done", "min")))
    summary["baseline"] = [result["baselines"].get(g) for g in summary["group"]]
    st.subheader("Replicate groups")
    st.caption("A replicate is a finished run with a seed of its own; n is the number of seeds. "
               "The band is the 95% Student-t interval over the seeds, clipped to [0, 1].")
    st.dataframe(summary, hide_index=True, key="compare-groups")
    apart = groups[~groups["counted"]]
    if not apart.empty:
        st.subheader("Not counted as replicates (drawn dotted)")
        st.dataframe(apart[["run_id", "group", "seed", "state", "generations_done", "why"]], hide_index=True,
                     key="compare-apart")
else:
    st.plotly_chart(figures.compare_figure(drawable, metric, home()), key="compare-chart")

def _reevaluated(run_ids: list[str]) -> None:
    """The picks of the chosen runs evaluated again on fresh seeds (`coral evaluate`), per group."""
    st.subheader("Picks re-evaluated on fresh seeds")
    measure = st.radio("Instances", list(REEVALUATED), format_func=REEVALUATED.get, horizontal=True,
                       key="compare-reevaluated-measure")
    try:
        summary = reevaluation_summary(run_ids, home(), measure)
    except CoralError as exc:
        st.error(str(exc))
        return
    _reevaluate_button(summary["missing"], summary["arguments"])
    if summary["groups"].empty:
        st.info("No re-evaluation to show. A run's recorded fitness is the best of many noisy evaluations; "
                "`coral evaluate RUN ...` evaluates each finished run's pick again on fresh sampling seeds "
                "and held-out instances, beside the untuned model on the same seeds, and it appears here."
                + "".join(f"\n- {r}: {why}" for r, why in summary["missing"]))
        return
    st.plotly_chart(reevaluation_chart(summary), key="compare-reevaluated-chart")
    st.caption(f"{summary['setting']}. Bars: the mean over each group's seeds, with the 95% Student-t interval "
               f"from {MIN_BAND} seeds on; grey: the untuned model on the same seeds and instances.")
    groups = summary["groups"]
    st.dataframe(groups[["label", "group", "n", "seeds", "mean", "lo", "hi", "baseline", "vs_baseline",
                         "vs_baseline_se", "vs_baseline_z"]],
                 hide_index=True, key="compare-reevaluated-groups",
                 column_config={"vs_baseline": st.column_config.NumberColumn("- no adapter", format="%+.3f"),
                                "vs_baseline_se": st.column_config.NumberColumn("SE", format="%.3f"),
                                "vs_baseline_z": st.column_config.NumberColumn("SEs", format="%.1f"),
                                **{c: st.column_config.NumberColumn(c, format="%.3f")
                                   for c in ("mean", "lo", "hi", "baseline")}})
    differences = summary["differences"]
    if not differences.empty:
        st.caption("Between groups with seeds in common (A and B: the groups above): the difference paired by "
                   "seed, and paired by instance and seed (both picks answered the same instances under the "
                   "same seeds); SEs: the difference in standard errors.")
        headers = {"a": "A", "b": "B", "seeds": "seeds", "by_seed": "A - B by seed", "by_seed_se": "SE (seed)",
                   "by_seed_z": "SEs (seed)", "by_instance": "A - B by instance", "by_instance_se": "SE (instance)",
                   "by_instance_z": "SEs (instance)"}
        formats = {"by_seed": "%+.3f", "by_instance": "%+.3f", "by_seed_se": "%.3f", "by_instance_se": "%.3f",
                   "by_seed_z": "%.1f", "by_instance_z": "%.1f"}
        st.dataframe(differences[list(headers)], hide_index=True, key="compare-reevaluated-differences",
                     column_config={c: (st.column_config.NumberColumn(h, format=formats[c]) if c in formats
                                        else st.column_config.Column(h)) for c, h in headers.items()})
    if summary["missing"]:
        st.info("Not in this comparison: " + "; ".join(f"{r} ({why})" for r, why in summary["missing"]))


def _reevaluate_button(missing: list[tuple[str, str]], setting: dict[str, Any] | None) -> None:
    """Start `coral evaluate` in the background for the chosen finished runs not re-evaluated yet
    (or not with `setting`, the one shown, which the rest then shares); while one runs (one at a
    time per home), say how far it is and look again every 3 s."""
    job = reevaluation_job(home())
    running = bool(job and job["running"])
    st.session_state["compare-reevaluating"] = running
    if job and running:
        st.info(f"Re-evaluating {', '.join(job['runs'])} in the background (`coral evaluate`, process "
                f"{job['pid']}): {job['last'] or 'starting'}")
    elif job and job["error"] and any(r in job["runs"] for r, _ in missing):
        st.error(f"The re-evaluation of {', '.join(job['runs'])} failed: {job['error']}")
    finished = set(stored.loc[stored["state"] == "finished", "run_id"])
    todo = [r for r, why in missing
            if why.startswith(("not re-evaluated", "re-evaluated with another")) and r in finished]
    if todo and not running:
        label = f"Re-evaluate {len(todo)} pick{'s' if len(todo) != 1 else ''} on fresh seeds"
        how = (f"{setting['fresh']} fresh seeds x {setting['samples']} answers per instance, on the "
               f"{setting['on']} instances, as the others shown" if setting
               else "2 fresh sampling seeds x 5 answers per held-out instance")
        if st.button(label, key="compare-reevaluate",
                     help=f"Each run's best genome with its adapter, and the untuned model, on {how}: "
                          + ", ".join(todo)):
            try:
                start_reevaluation(home(), todo, setting)
            except CoralError as exc:
                st.error(str(exc))
                return
            st.session_state["compare-reevaluating"] = True
            st.rerun()


_reevaluated(drawable)

compared = analysis.compare_runs(drawable, metric, home())
st.subheader("Final metrics (last finished generation)")
# Short headers and narrow number columns: the table fits a 1400 px window beside the sidebar.
final = compared["final"]
numbers = {c: st.column_config.NumberColumn(c.removeprefix("best_").replace("_", " "), format="%.3f", width="small")
           for c in final.columns if c not in ("run_id", "last_generation")}
st.caption("best of each metric in the run's last finished generation")
st.dataframe(final, hide_index=True, key="compare-final", width="stretch",
             column_config={"run_id": st.column_config.Column("run", width="medium"),
                            "last_generation": st.column_config.NumberColumn("last gen", width="small"),
                            **numbers})
st.subheader("Config keys that differ")
if compared["config_diff"]:
    rows = [{"key": key, **{run: str(value) for run, value in values.items()}}
            for key, values in compared["config_diff"].items()]
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="compare-diff")
else:
    st.write("The configs are identical." if len(drawable) > 1 else "Pick a second run to diff.")
_wait_for_launched()
