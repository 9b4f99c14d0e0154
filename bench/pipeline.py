"""Pipelined engine vs a stage-by-stage barrier, in one run, on sleeping job bodies.

Workers sleep for the stage durations (training 0.05/0.1/0.2/0.4 s in rotation over the
genomes, generation 0.1 s, tests 0.05 s); 8 genomes, 2 local worker processes per stage, the
mini benchmark's 3 eval problems x 1 sample. Both engines must produce identical scores; the
pipeline should need at most 0.7 of the barrier's wall time.

    python bench/pipeline.py [--generations 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from coral.config import load_config
from coral.evolution.genome import Genome
from coral.evolution.selection import OBJECTIVES
from coral.execution.executor import QueueExecutor
from coral.execution.jobs import JobBodies, WorkerContext
from coral.execution.messages import Job
from coral.execution.transport import LocalTransport
from coral.execution.workers import LocalWorkerPool
from coral.home import Home
from coral.run.engine import EvolutionEngine, Task
from coral.run.lifecycle import load_problems
from coral.run.registry import register_run, run_science

REPO = Path(__file__).resolve().parents[1]

TRAIN_SECONDS = (0.05, 0.1, 0.2, 0.4)
GENERATE_SECONDS = 0.1
TEST_SECONDS = 0.05
HANDLERS_SPEC = "bench.pipeline:HANDLERS"


# ---------------------------------------------------------------- sleeping bodies (echo-style)


def sleep_train(job: Job, ctx: WorkerContext) -> dict[str, Any]:
    time.sleep(job.payload["sleep_s"])
    return {"cache_key": "bench-" + job.job_id.split(":")[2], "cache_hit": False}


def sleep_generate(job: Job, ctx: WorkerContext) -> dict[str, Any]:
    time.sleep(GENERATE_SECONDS)
    p = job.payload
    return {"texts": [[f"{p['seed']}|{i}|{s}" for s in range(p["samples"])]
                      for i in range(len(p["prompts"]))]}


def sleep_test(job: Job, ctx: WorkerContext) -> dict[str, Any]:
    time.sleep(TEST_SECONDS)
    value = (sum(job.payload["raw"].encode()) % 97) / 96
    objectives = dict.fromkeys(OBJECTIVES, value)
    return {"candidate": job.payload["raw"], "cases": [], "objectives": objectives,
            "passed_all": value > 0.5}


HANDLERS = {"train": sleep_train, "generate": sleep_generate, "test": sleep_test}


# ---------------------------------------------------------------- the two engines


class BenchEngine(EvolutionEngine):
    """Adds each train job's sleep (rotation over the population) and per-generation timing."""

    times: list[float]

    def _submit_train(self, generation: int, task: Task) -> None:
        assert task.key is not None
        index = self._order[task.ident]
        # Not the train body's payload: sleep_train's own, so the job is built here directly.
        self.executor.submit([Job(job_id=f"g{generation:04d}:train:{task.key}", run_id=self.run_id,
                                  kind="train", payload={"sleep_s": TRAIN_SECONDS[index % len(TRAIN_SECONDS)]},
                                  generation=generation, subject=task.key or "")])

    def _evaluate(self, generation: int, population: list[Genome]) -> Any:
        self._order = {g.id: i for i, g in enumerate(population)}
        started = time.perf_counter()
        out = self._stages(generation, population)
        self.times.append(time.perf_counter() - started)
        return out

    def _stages(self, generation: int, population: list[Genome]) -> Any:
        return super()._evaluate(generation, population)


class BarrierEngine(BenchEngine):
    """The predecessor's shape: all training, then all generation, then all tests."""

    def _stages(self, generation: int, population: list[Genome]) -> Any:
        self._barrier = True
        self._held: list[tuple[str, int, Task]] = []
        try:
            return super()._stages(generation, population)
        finally:
            self._barrier = False

    def _submit_generate(self, generation: int, task: Task) -> None:
        self._hold("generate", generation, task, super()._submit_generate)

    def _submit_tests(self, generation: int, task: Task) -> None:
        self._hold("test", generation, task, super()._submit_tests)

    def _hold(self, stage: str, generation: int, task: Task, submit: Any) -> None:
        if not getattr(self, "_barrier", False):
            return submit(generation, task)
        self._held.append((stage, generation, task))
        progress = self.executor.progress()
        earlier = {"generate": ["train"], "test": ["train", "generate"]}[stage]
        pending = sum(progress.get(k, {}).get(s, 0) for k in earlier for s in ("queued", "running"))
        if pending == 0:  # the stage before is complete: release everything held for this one
            held, self._held = [h for h in self._held if h[0] == stage], \
                [h for h in self._held if h[0] != stage]
            for _, gen, t in held:
                submit(gen, t)
        return None


def run_engine(cls: type[BenchEngine], home: Home, run_id: str, generations: int) -> list[float]:
    config = load_config(REPO / "configs" / "smoke.yaml", [
        f"generations={generations}", "population=8", "benchmark.samples=1",
        f"benchmark.root={REPO / 'tests' / 'fixtures' / 'mini_bench'}",
        f"benchmark.split={REPO / 'tests' / 'fixtures' / 'mini_bench' / 'split.json'}"])  # not smoke's
    problems = load_problems(config)
    register_run(home, run_id, config, {"train": problems.train, "eval": problems.eval})
    with LocalTransport(home.queue_db) as transport:
        executor = QueueExecutor(transport, run_id, config.backend)
        engine = cls(config, run_id, home, executor, transport, problems, threads=1)
        engine.times = []
        engine.run()
    return engine.times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Home(tmp).ensure()
        # One set of workers (2 per stage) serves every run, started before any is timed.
        pools = [LocalWorkerPool(home, 2, [kind], bodies=JobBodies(HANDLERS_SPEC), log_dir=home.root / "logs")
                 for kind in ("train", "generate", "test")]
        for pool in pools:
            pool.start()
        try:
            run_engine(BenchEngine, home, "warmup", 1)
            barrier = run_engine(BarrierEngine, home, "barrier", args.generations)
            pipeline = run_engine(BenchEngine, home, "pipeline", args.generations)
        finally:
            for pool in pools:
                pool.stop()
        same = run_science(home, "barrier")["scores"] == run_science(home, "pipeline")["scores"]
    print(f"{'generation':>10} {'barrier s':>10} {'pipeline s':>11} {'ratio':>6}")
    for g, (b, p) in enumerate(zip(barrier, pipeline, strict=True)):
        print(f"{g:>10} {b:>10.2f} {p:>11.2f} {p / b:>6.2f}")
    total_b, total_p = sum(barrier), sum(pipeline)
    print(f"{'total':>10} {total_b:>10.2f} {total_p:>11.2f} {total_p / total_b:>6.2f}  "
          f"(target <= 0.70; identical scores: {same})")


if __name__ == "__main__":
    main()
