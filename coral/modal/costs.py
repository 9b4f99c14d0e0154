"""What a run cost, from its own accounting: every `job_finished` event carries the seconds its
genome's train job (when it trained) and generate job took, and its own test job's seconds. On
Modal the first two are GPU container seconds and the third CPU container seconds; idle time
(a worker waiting `modal.idle_seconds` for its next job, plus Modal's scaledown window) comes on
top and is not in the events (docs/modal.md, "What a run costs").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coral.run.events import read_events


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
