"""The Live page's words and numbers, without Streamlit: what a run is doing now, in one read.

`live_view` joins the run registry (state, status time) with the engine's progress record
(coral/run/progress.py): the running generation's stage counts with totals known up front,
what is still finishing while paused, smoothed job rates, the estimate of the time left, and
the genomes scored so far. `expected_seconds` says how long a config should take before it is
launched. Generation numbers are 0-based, finished generations are counted (docs/engine.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from coral.config import Config
from coral.errors import CoralError
from coral.home import Home
from coral.run.progress import RATE_WINDOW as RATE_WINDOW  # the Live page names the rates' window
from coral.run.progress import STAGES, generations_done, rates, read_progress, seconds_left
from coral.run.registry import ACTIVE, RunInfo, list_runs, read_json, run_info
from coral.services.backends import config_backend

# Reference job times (mean seconds per job) and parallelism, used by `expected_seconds` until
# this home has a finished run of the same model to measure from: a `configs/smoke.yaml` run with
# the bundled tiny model on 2 local workers, 2 CPU cores at load average ~10 (a shared machine;
# bench/RESULTS.md, 2026-12-03), so the estimate errs long on an idle laptop. "start": launch to
# the first job (orchestrator start, benchmark load).
REFERENCE = {"train": 21.7, "generate": 7.6, "test": 2.8, "start": 5.0, "parallel": 1.96}


@dataclass
class LiveView:
    info: RunInfo
    progress: dict[str, Any] | None
    finished_generations: int  # generations finished (a count, not a generation number)
    running_generation: int | None  # 0-based; None when no generation is running
    stages: dict[str, dict[str, int]] = field(default_factory=dict)  # running generation's counts
    rates: dict[str, float | None] = field(default_factory=dict)  # jobs/s, smoothed
    seconds_left: float | None = None
    # Where seconds_left comes from: "measured" (this run's job times) or "expected" (before
    # every stage has a measured job: the config's expected duration less the run's age).
    estimate_source: str = "measured"
    last_update: float | None = None  # status or progress, whichever is newer
    genomes: list[dict[str, Any]] = field(default_factory=list)  # scored as they landed

    @property
    def active(self) -> bool:
        return self.info.state in ACTIVE

    def generation_genomes(self) -> list[dict[str, Any]]:
        """Genomes of the running generation scored so far."""
        g = self.running_generation
        return [] if g is None else [x for x in self.genomes if x["generation"] == g]

    def waiting_for_room(self) -> dict[str, int]:
        """Per stage: jobs submitted but held back by the executor's window until the queues
        have room (backpressure, docs/transport.md): a stage that waits, not one that hangs."""
        return {s: int(c.get("waiting", 0)) for s, c in self.stages.items() if c.get("waiting")}

    def finishing(self) -> dict[str, int]:
        """While paused: jobs started before the pause still running, jobs held unstarted by
        workers, jobs waiting in the queue (the running generation's, per state)."""
        out = {"running": 0, "held": 0, "queued": 0}
        for counts in self.stages.values():
            for key in out:
                out[key] += int(counts.get(key, 0))
        return out


def live_view(run_id: str, home: Home | None = None, now: float | None = None) -> LiveView:
    home = home or Home()
    now = time.time() if now is None else now
    info = run_info(home, run_id)
    progress = read_progress(home, run_id)
    status = read_json(home.run_dir(run_id) / "status.json")
    finished = finished_generations(info)
    running = info.generation if info.state in ACTIVE and info.generation is not None else None
    updates = [t for t in (status.get("updated"), (progress or {}).get("updated")) if t]
    view = LiveView(info=info, progress=progress, finished_generations=finished,
                    running_generation=running, last_update=max(updates) if updates else None)
    if progress is not None:
        view.genomes = list(progress.get("genomes") or [])
        if running is not None and progress.get("generation") == running:
            view.stages = {s: dict(progress["stages"].get(s, {})) for s in STAGES}
            view.rates = rates(progress, now)
            view.seconds_left = seconds_left(progress, now)
    if view.active and view.seconds_left is None:
        view.seconds_left = expected_left(home, run_id, now)
        view.estimate_source = "expected"
    return view


def run_ids(home: Home) -> list[str]:
    """Registered runs, newest first (run ids sort by creation time)."""
    return [info.run_id for info in reversed(list_runs(home))]


def expected_left(home: Home, run_id: str, now: float) -> float | None:
    """Before this run has measured job times (starting, or a stage without a finished job): its
    config's expected duration (`expected_seconds`, the Launch page's figure) less its age;
    None when the run record cannot say (it is being written)."""
    from coral.run.registry import read_json_yaml, run_config

    key = (str(home.root), run_id)
    if key not in _EXPECTED:  # once per run: it loads the benchmark split and reads other runs
        try:
            config = run_config(home, run_id)
            created = read_json_yaml(home.run_dir(run_id) / "config.yaml").get("created")
            total, _ = expected_seconds(config, home)
        except (CoralError, OSError, ValueError):
            return None
        _EXPECTED[key] = (total, float(created) if created else now)
    total, created_at = _EXPECTED[key]
    return max(0.0, total - max(0.0, now - created_at))


# (home, run id) -> (expected seconds, created): a run's expected duration does not change.
_EXPECTED: dict[tuple[str, str], tuple[float, float]] = {}


def waiting_note(counts: dict[str, int]) -> str:
    """' · N waiting for room' when the window holds some of a stage's jobs back, else ''."""
    waiting = int(counts.get("waiting", 0))
    return f" · {waiting:,} waiting for room (window full)" if waiting else ""


def stage_text(stage: str, counts: dict[str, int]) -> str:
    """One stage of the running generation in words: done of total, then where the rest are."""
    done = int(counts.get("done", 0)) + int(counts.get("failed", 0))
    parts = [f"{stage} {done:,}/{int(counts.get('total', 0)):,} done"]
    parts += [f"{int(counts[k]):,} {k}" for k in ("running", "held", "queued") if counts.get(k)]
    return " · ".join(parts) + waiting_note(counts)


def finished_generations(info: RunInfo) -> int:
    return generations_done(info.state, info.generation, info.generations)


def default_run(home: Home | None = None) -> str | None:
    """The run a page shows first: the newest active run, else the newest finished one, else
    the newest (a failed run is shown first only when nothing else exists)."""
    runs = list(reversed(list_runs(home or Home())))
    for wanted in (ACTIVE, ("finished",)):
        for info in runs:
            if info.state in wanted:
                return info.run_id
    return runs[0].run_id if runs else None


# ---------------------------------------------------------------------- before a launch

DEFAULT_CONFIG = "quick.yaml"  # the Launch page's first choice: first genome plotted within ~30 s


def preflight(config: Config) -> None:
    """What can be checked before a run is registered, so a launch fails at once with one line
    instead of seconds later in a log: for a backend that runs here, the model folder (a local path;
    Modal resolves its own), its config.json and tokenizer, and the device; the benchmark and its
    split; and the backend's own checks (a local pool's size, Modal credentials)."""
    from coral.benchmark.split import split_for_config
    from coral.run.lifecycle import check_model

    backend = config_backend(config)
    if backend.runs_here:
        check_model(config)  # the folder, its config.json and tokenizer, the device
    split_for_config(config)  # the benchmark folder, its problems and the split: one line if wrong
    backend.preflight(config)


def jobs_per_generation(config: Config, eval_problems: int) -> dict[str, int]:
    """At most this many jobs per generation: a train job per genome (fewer with cache hits),
    a generate job per genome, a test job per genome x eval problem x sample."""
    pop = config.population
    return {"train": pop, "generate": pop, "test": pop * eval_problems * config.benchmark.samples}


def _measured(home: Home, model: str) -> tuple[dict[str, float], str] | None:
    """Mean job times and parallelism of this home's newest finished run of the same model
    (with the real job bodies)."""
    for info in reversed(list_runs(home)):
        if info.state != "finished":
            continue
        progress = read_progress(home, info.run_id)
        if not progress or not progress.get("finished"):
            continue
        from coral.run.registry import run_record

        record = run_record(home, info.run_id)
        if record.get("handlers") or (record["config"].get("model") or {}).get("name") != model:
            continue  # stand-in job bodies (tests) or another model: their times say nothing here
        done, busy = progress["jobs_done"], progress["busy"]
        if not all(done.get(s) for s in STAGES):
            continue
        wall = sum(f["seconds"] for f in progress["finished"])
        out = {s: busy[s] / done[s] for s in STAGES}
        out["parallel"] = max(1.0, sum(busy.values()) / wall) if wall > 0 else 1.0
        out["start"] = REFERENCE["start"]
        return out, f"job times of run {info.run_id}"
    return None


def expected_seconds(config: Config, home: Home | None = None) -> tuple[float, str]:
    """(seconds, where the job times come from): the config's work at measured job times.

    Work: the baseline (one generate job and one test per eval problem) and, per generation,
    `jobs_per_generation` (an upper bound on train jobs; none in the final rounds), divided by
    the parallelism measured on the same run; plus start-up. An estimate for choosing a config,
    not a promise."""
    from coral.benchmark.split import split_for_config

    home = home or Home()
    eval_problems = len(split_for_config(config).eval)
    measured = _measured(home, config.model.name)
    times, source = measured if measured else (REFERENCE, "reference job times (docs/dashboard.md)")
    per_gen = jobs_per_generation(config, eval_problems)
    rounds = config.evolution.final_rounds  # they train nothing (docs/engine.md, "Final rounds")
    work = sum(per_gen[s] * times[s] for s in STAGES) * (config.generations - rounds)
    work += sum(per_gen[s] * times[s] for s in STAGES if s != "train") * rounds
    work += times["generate"] + eval_problems * times["test"]
    parallel = min(float(times["parallel"]), float(config.backend.workers))
    return times["start"] + work / max(1.0, parallel), source


def duration_words(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
