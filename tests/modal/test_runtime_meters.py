"""The runtime objective across meters (issue 28 item 4): each test records the meter that
counted its cost, and runs measured on different meters are compared without that objective,
with the reason given. `sandbox.meter: cpu-time` forces the fallback that a machine without
perf_event_open (Modal's gVisor) has."""

from __future__ import annotations

from coral.benchmark.loader import load_benchmark
from coral.config import REPO_ROOT, SandboxConfig
from coral.execution.jobs import JobBodies
from coral.execution.messages import encode, event_id
from coral.home import Home
from coral.modal.validate import first_difference, run_on_double
from coral.run.events import read_events, segments
from coral.run.registry import compare_runs, run_meters, runtime_comparison
from coral.sandbox.objectives import score_candidate
from coral.sandbox.runner import RunnerLimits, clear_reference_cache

SMOKE = REPO_ROOT / "configs" / "smoke.yaml"
FAKES = "coral.testing.fakes:HANDLERS"
# Runtime weighs nothing here, so selection cannot depend on the meter: what differs between
# the two runs is then the runtime objective alone.
SMALL = ["population=2", "generations=1", "objectives.weights.runtime=0"]


def test_the_sandbox_reports_the_meter_it_counted_with() -> None:
    problem = next(p for p in load_benchmark(REPO_ROOT / "data" / "problems") if p.json_cases)
    clear_reference_cache()
    auto = score_candidate(problem, problem.correct_source, RunnerLimits.from_config(SandboxConfig()))
    forced = score_candidate(problem, problem.correct_source,
                             RunnerLimits.from_config(SandboxConfig(meter="cpu-time")))
    assert auto.meter in ("instructions", "task-clock")  # this machine's perf_event_open
    assert forced.meter == "cpu-time"
    assert auto.fixed and forced.fixed


def test_runs_on_different_meters_leave_runtime_out_with_the_reason() -> None:
    home = Home().ensure()
    run_on_double(SMOKE, SMALL, 2, home, "local", JobBodies(FAKES))
    run_on_double(SMOKE, [*SMALL, "sandbox.meter=cpu-time"], 2, home, "gvisor", JobBodies(FAKES))

    assert run_meters(home, "local") == ["task-clock"]
    assert run_meters(home, "gvisor") == ["cpu-time"]
    reason = runtime_comparison(home, "local", "gvisor")
    assert reason == ("runtime objective left out: run local measured with task-clock, run gvisor with "
                      "cpu-time (set sandbox.meter alike on both to compare it)")
    # The runtime objective really differs: kept in, the scores would not compare equal.
    scores = {run: [e.data["genomes"] for e in read_events(home.events_dir(run))
                    if e.type == "generation_finished"] for run in ("local", "gvisor")}
    assert scores["local"] != scores["gvisor"]
    notes: list[str] = []
    same = compare_runs(home, "local", "gvisor", notes)
    assert notes == [reason]
    assert same == {"populations": True, "scores": True, "event_ids": True, "events": True}
    assert first_difference(home, "local", "gvisor") is None

    # A run that goes on with another meter's job events (a resume on a machine without the
    # counter) is flagged, even against itself.
    # Its events carry on the log's own numbering, as a resume writes them.
    jobs = [e for e in read_events(home.events_dir("gvisor")) if e.type == "job_finished"]
    last = list(read_events(home.events_dir("local")))[-1].seq
    carried = [e.model_copy(update={"run_id": "local", "seq": seq, "event_id": event_id("local", seq)})
               for seq, e in enumerate(jobs, start=last + 1)]
    with segments(home.events_dir("local"))[-1].open("a") as log:
        log.write("".join(encode(e) + "\n" for e in carried))
    assert run_meters(home, "local") == ["task-clock", "cpu-time"]
    assert runtime_comparison(home, "local", "local") == (
        "runtime objective left out: run local measured with task-clock then cpu-time "
        "(resumed on another machine)")
