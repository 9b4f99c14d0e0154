"""What a run cost, from its own accounting: every `job_finished` event carries the seconds its
genome's train job (when it trained) and generate job took, and its own test job's seconds. On
Modal the first two are GPU container seconds and the third CPU container seconds; idle time
(a worker waiting `modal.idle_seconds` for its next job, plus Modal's scaledown window) comes on
top and is not in the events. Each GPU worker call records its busy and idle seconds in the
run's folder (`calls/`, coral.modal.runtime.record_call): `idle_recorded` prices those; for a
run without them `idle_bound` bounds idle time from the run's config (docs/modal.md, "What a
run costs").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from coral.config import Config
from coral.errors import CoralError
from coral.run.events import read_events

SCALEDOWN_SECONDS = 2  # coral/modal/app.py: a container lingers this long after its call exits


def run_costs(events_dir: Path) -> dict[str, Any]:
    """Seconds by stage, over the run and per genome evaluation (a genome in a generation)."""
    genomes: dict[tuple[int | None, str], dict[str, float]] = {}
    test_seconds = 0.0
    tests = 0
    for event in read_events(events_dir):
        if event.type != "job_finished":
            continue
        timings = event.data.get("timings") or {}
        test_seconds += float(timings.get("test", 0.0))
        tests += 1
        key = (event.generation, str(event.data.get("genome")))
        genomes.setdefault(key, {stage: float(timings[stage])
                                 for stage in ("train", "generate") if stage in timings})
    # Genomes that waited for one train job (same heavy genes) all carry its duration: one
    # (generation, duration) pair is one job, as two jobs never last the same microseconds.
    trainings = {(gen, g["train"]) for (gen, _), g in genomes.items() if "train" in g}
    train = sum(seconds for _, seconds in trainings)
    generate = sum(g.get("generate", 0.0) for g in genomes.values())
    n = len(genomes)
    return {
        "genome_evaluations": n,
        "trainings": len(trainings),
        "generations": sum("generate" in g for g in genomes.values()),  # generate jobs
        "tests": tests,
        "gpu_seconds": {"train": train, "generate": generate, "total": train + generate},
        "cpu_seconds": {"test": test_seconds},
        "per_genome": {"gpu_seconds": (train + generate) / n if n else 0.0,
                       "test_cpu_seconds": test_seconds / n if n else 0.0},
    }


class CallRecord(BaseModel):
    """One worker call's accounting, as coral.modal.runtime.Heartbeat.call_record writes it."""

    model_config = ConfigDict(extra="ignore")
    worker: str
    group: str
    jobs: int
    lived_seconds: float
    busy_seconds: float
    idle_seconds: float


def recorded_calls(run_dir: Path) -> dict[str, dict[str, float]]:
    """Per worker group ("train", "generate", ...): calls, jobs, busy and idle seconds, as the
    calls recorded them; each call's idle also counts the scaledown window after it exits."""
    out: dict[str, dict[str, float]] = {}
    for path in sorted((run_dir / "calls").glob("*.json")):
        try:
            call = CallRecord.model_validate_json(path.read_text())
        except (OSError, ValidationError) as exc:
            first = str(exc).splitlines()[0]
            raise CoralError(f"worker call record {path} is unreadable: {first}") from None
        row = out.setdefault(call.group, {"calls": 0, "jobs": 0, "busy_seconds": 0.0, "idle_seconds": 0.0})
        row["calls"] += 1
        row["jobs"] += call.jobs
        row["busy_seconds"] += call.busy_seconds
        row["idle_seconds"] += call.idle_seconds + SCALEDOWN_SECONDS
    return out


def _price(gpu: str) -> float | None:
    """List price per GPU-second of the card a `modal.gpu_*` setting names."""
    from coral.modal.plan import GPUS

    card = gpu.split(":")[0].rstrip("!").upper()
    return next((v[1] for k, v in GPUS.items() if k.upper() == card), None)


def idle_recorded(calls: dict[str, dict[str, float]], config: Config) -> dict[str, Any]:
    """What idle GPU time cost per stage, from the calls' own records (recorded_calls)."""
    gpus = {"train": config.modal.gpu_train, "generate": config.modal.gpu_generate}
    stages: dict[str, Any] = {}
    for stage, gpu in gpus.items():
        row = calls.get(stage)
        if row is None:
            continue
        price = _price(gpu)
        stages[stage] = {**row, "gpu": gpu,
                         "usd_busy": None if price is None else row["busy_seconds"] * price,
                         "usd_idle": None if price is None else row["idle_seconds"] * price}
    return {"scaledown_seconds": SCALEDOWN_SECONDS, "stages": stages}


def idle_bound(costs: dict[str, Any], config: Config, generations: int) -> dict[str, Any]:
    """An upper bound on idle GPU seconds and the run's list-price cost per stage. Each
    generation, at most min(max_containers, its jobs) worker calls serve a GPU stage, and each
    idles at most `modal.idle_seconds` after its last job plus the scaledown window (less when
    the next generation's jobs come sooner)."""
    modal = config.modal
    per_call = modal.idle_seconds + SCALEDOWN_SECONDS
    jobs = {"train": costs["trainings"], "generate": costs["generations"]}
    gpus = {"train": modal.gpu_train, "generate": modal.gpu_generate}
    out: dict[str, Any] = {"per_call_seconds": per_call, "stages": {}}
    for stage, count in jobs.items():
        per_generation = count / generations if generations else 0.0
        calls = min(modal.max_containers, per_generation) * generations
        idle = calls * per_call
        price = _price(gpus[stage])
        busy = costs["gpu_seconds"][stage]
        out["stages"][stage] = {
            "gpu": gpus[stage], "busy_seconds": busy, "idle_seconds_at_most": idle,
            "usd_busy": None if price is None else busy * price,
            "usd_idle_at_most": None if price is None else idle * price}
    return out
