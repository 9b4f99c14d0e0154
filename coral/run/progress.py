"""A run as it happens: runs/RUN_ID/progress.json, written by the engine, read by the dashboard.

The event log stays canonical (a generation's job events are emitted together at its end, in a
fixed order: coral/run/engine.py); what depends on timing lives here instead: the running
generation's job counts per stage with totals known when it starts, each genome's scores the
moment its last test lands, recent completion times (for smoothed rates), and the wall time of
every finished generation (for the time-left estimate). Nothing reads this file to decide
anything; it is replaced whole (temp file + rename), so a reader never sees half of it.

Generation numbers are 0-based everywhere (events, store, charts, CLI): "generation 3" is the
fourth; "3/5 finished" counts finished generations (docs/engine.md, "Generation numbers and the
progress record").
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from coral.home import Home

PROGRESS_FILE = "progress.json"
STAGES = ("train", "generate", "test")
WRITE_EVERY = 0.5  # seconds between writes for job counts; a genome's scores are written at once
RATE_WINDOW = 30.0  # seconds of completions a rate is measured over (smoothed, no flicker)
RECENT = 400  # completion times kept per stage: enough for RATE_WINDOW at ~13 jobs/s
GENOMES_KEPT = 2000  # per-genome points kept (the oldest go first; the store has them all)


def generations_done(state: str, generation: int | None, generations: int | None) -> int:
    """Finished generations, a count, from a run's registry entry (state, current generation,
    configured generations). Generations run in order from 0, so while generation g runs, or
    after the run stopped, failed or was interrupted in it, g are done; a finished run did all."""
    if state == "finished":
        return int(generations or 0)
    return int(generation or 0)


def progress_path(home: Home, run_id: str) -> Path:
    return home.run_dir(run_id) / PROGRESS_FILE


def _write(path: Path, data: dict[str, Any]) -> None:
    """Temp file + rename, without fsync: a lost update costs nothing but a stale display."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, separators=(",", ":"))
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def read_progress(home: Home, run_id: str) -> dict[str, Any] | None:
    """The run's progress record, or None when it has none (not started, or an older run)."""
    try:
        data = json.loads(progress_path(home, run_id).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError, RecursionError):  # ValueError: bad JSON, not UTF-8, digit limit
        return None  # timing bookkeeping only: the log and status.json say what the run did
    return data if isinstance(data, dict) else None


class ProgressWriter:
    """The engine's side: counts, per-genome scores and timings of one run, written as they change."""

    def __init__(self, home: Home, run_id: str, generations: int, population: int,
                 write_every: float = WRITE_EVERY) -> None:
        self.path = progress_path(home, run_id)
        self.write_every = write_every
        self._last_write = 0.0
        self._urgent = False
        self._recent: dict[str, deque[float]] = {s: deque(maxlen=RECENT) for s in STAGES}
        self.data: dict[str, Any] = {
            "run_id": run_id, "started": time.time(), "generations": generations,
            "population": population, "generation": None, "generation_started": None,
            "paused": False, "stages": {}, "busy": dict.fromkeys(STAGES, 0.0),
            "jobs_done": dict.fromkeys(STAGES, 0), "genomes": [], "finished": [], "updated": None,
        }

    def generation_started(self, generation: int, totals: dict[str, int]) -> None:
        """A generation's job counts per stage, known before any job of it runs."""
        self.data.update(generation=generation, generation_started=time.time(), paused_seconds=0.0,
                         stages={
            stage: {"total": int(totals.get(stage, 0)), "done": 0, "failed": 0, "waiting": 0,
                    "queued": 0, "running": 0, "held": 0} for stage in STAGES})
        self.flush(force=True)

    def job_done(self, stage: str, ok: bool, seconds: float) -> None:
        """Its time, for rates and the estimate; the stage counts come from `states`."""
        now = time.time()
        self._recent[stage].append(now)
        self.data["busy"][stage] += max(0.0, seconds)
        self.data["jobs_done"][stage] += 1

    def states(self, counts: dict[str, dict[str, int]]) -> None:
        """Job counts per state and stage of the running generation, as the executor has them
        (it knows of results the engine has not taken in yet). "waiting": submitted but held
        back by the executor's window until the transport has room (backpressure, not a hang)."""
        for stage, states in counts.items():
            entry = self.data["stages"].get(stage)
            if entry is not None:
                for state in ("waiting", "queued", "running", "held", "done", "failed"):
                    entry[state] = int(states.get(state, 0))

    def genome_scored(self, generation: int, genome_id: str, scores: dict[str, float]) -> None:
        self.data["genomes"].append({"generation": generation, "genome": genome_id,
                                     "at": time.time(), **scores})
        del self.data["genomes"][:-GENOMES_KEPT]
        self._urgent = True  # written at the next flush, however soon

    def generation_finished(self, generation: int) -> None:
        """Its wall time without the time it spent paused, for the estimate of later ones."""
        seconds = time.time() - self.data["generation_started"] - self.data["paused_seconds"]
        jobs = {stage: counts["total"] for stage, counts in self.data["stages"].items()}
        self.data["finished"].append({"generation": generation, "seconds": seconds, "jobs": jobs})
        self.flush(force=True)

    def paused(self, flag: bool) -> None:
        now = time.time()
        if flag and not self.data["paused"]:
            self.data["paused_at"] = now
        elif not flag and self.data["paused"]:
            self.data["paused_seconds"] = self.data.get("paused_seconds", 0.0) + now - self.data["paused_at"]
        self.data["paused"] = flag
        self.flush(force=True)

    def flush(self, force: bool = False) -> None:
        now = time.time()
        if not (force or self._urgent) and now - self._last_write < self.write_every:
            return
        self._last_write, self._urgent = now, False
        self.data["updated"] = now
        self.data["recent"] = {stage: list(times) for stage, times in self._recent.items()}
        _write(self.path, self.data)


# ---------------------------------------------------------------------- reading


def rates(progress: dict[str, Any], now: float, window: float = RATE_WINDOW) -> dict[str, float | None]:
    """Jobs finished per second per stage over the last `window` seconds (or since the run
    started, when that is shorter): a smoothed rate. None when the run is too young to say."""
    started = progress.get("started")
    span = min(window, now - (now if started is None else float(started)))
    if span < 1.0:
        return dict.fromkeys(STAGES)
    recent = progress.get("recent") or {}
    return {stage: sum(1 for t in recent.get(stage, []) if t >= now - span) / span for stage in STAGES}


def seconds_left(progress: dict[str, Any], now: float) -> float | None:
    """An estimate of the run's remaining wall time from measured job durations.

    The running generation: its elapsed time scaled by the work left, where work weighs each
    stage's jobs by that stage's mean measured job time. Later generations: the median of the
    finished ones (generation 0 left out when others exist: it also evaluates the baseline and
    loads the model), or the running one's projected length. None until every stage with work
    left has finished a job (no measured time to weigh it by)."""
    generation = progress.get("generation")
    stages = progress.get("stages") or {}
    started = progress.get("generation_started")
    if generation is None or started is None or not stages:
        return None
    mean = {s: progress["busy"][s] / progress["jobs_done"][s]
            for s in STAGES if progress["jobs_done"].get(s)}
    total = done = 0.0
    for stage, counts in stages.items():
        left = counts["total"] - counts["done"] - counts["failed"]
        if left > 0 and stage not in mean:
            return None
        weight = mean.get(stage, 0.0)
        total += counts["total"] * weight
        done += (counts["done"] + counts["failed"]) * weight
    paused = float(progress.get("paused_seconds") or 0.0)
    if progress.get("paused"):
        paused += now - float(progress.get("paused_at") or now)
    elapsed = max(0.0, now - float(started) - paused)
    if done <= 0:
        return None
    projected = elapsed * total / done
    current_left = max(0.0, projected - elapsed)
    finished = [f["seconds"] for f in progress.get("finished", [])]
    if len(finished) > 1:
        finished = [f["seconds"] for f in progress["finished"] if f["generation"] != 0]
    later = sorted(finished)[len(finished) // 2] if finished else projected
    remaining = max(0, int(progress["generations"]) - int(generation) - 1)
    return current_left + remaining * later
