"""The evolution engine: a run's generations, pipelined through the executor's job stream.

Per genome: train (or reuse the run's adapter for these heavy genes) -> generate every eval
prompt x samples in one call -> one test job per (problem, sample). Each stage of a genome is
submitted the moment its input arrives, driven by the executor's completion stream, so no genome
waits for another between stages. When a generation's last test is in: objectives, gate +
NSGA-II (Evolution.select), breeding (Evolution.breed), events, checkpoint.

Determinism: everything that depends on completion order is buffered and emitted at the end of
the generation in a canonical order (genome id, problem, sample); cache hits are counted by the
engine (first request of a gene key in the run trains, every later one is a hit), not by which
worker happened to find an adapter on disk; wall times live only under "timings" in events.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coral import checkpoint as ckpt
from coral.bench.prompts import build_prompt
from coral.config import Config
from coral.errors import CoralError
from coral.events import EventLog
from coral.evolution import (
    OBJECTIVES,
    Evolution,
    Scored,
    genotype_diversity,
    phenotype_diversity,
    weighted_fitness,
)
from coral.executor import Executor
from coral.genome import Genome, Knobs
from coral.hashing import content_hash
from coral.home import Home
from coral.messages import Job, JobResult
from coral.model.adapters import canonical_genes
from coral.rng import stream_seed
from coral.runs import write_status
from coral.transport.base import Transport

log = logging.getLogger("coral.engine")

CONTROL_DICT = "control"
BASELINE = "baseline"
CONTROL_POLL = 0.5  # seconds between looks at the control dict while waiting


def control_key(run_id: str) -> str:
    return f"control:{run_id}"


def gene_key(genome: Genome) -> str:
    """Identifies the adapter within a run (base, data and training settings are fixed per run)."""
    return content_hash(canonical_genes(genome.genes))


def generation_seed(seed: int, generation: int, genome_id: str) -> int:
    return stream_seed(seed, generation, genome_id, "generate") % (2**63 - 1)


def baseline_knobs(config: Config) -> Knobs:
    """Greedy decoding ignores the sampling knobs; the longest allowed answer is kept."""
    return Knobs(temperature=1.0, top_p=1.0, top_k=50, repetition_penalty=1.0,
                 max_new_tokens=max(config.knobs.max_new_tokens))


class RunStopped(Exception):
    """A stop request was honoured between jobs."""


@dataclass
class Task:
    """One genome (or the baseline) moving through the stages within one generation."""

    ident: str
    genome: Genome | None  # None for the baseline
    key: str | None  # gene key; None for the baseline
    samples: int
    texts: list[list[str]] | None = None
    tests: dict[tuple[str, int], JobResult] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Problems:
    """The run's benchmark as the engine needs it: eval prompts in order, split lists."""

    root: str
    train: list[str]
    eval: list[str]
    prompts: list[str]


class EvolutionEngine:
    def __init__(
        self, config: Config, run_id: str, home: Home, executor: Executor, transport: Transport,
        problems: Problems, *, threads: int, progress: Callable[[str, dict], None] | None = None,
    ) -> None:
        self.config = config
        self.run_id = run_id
        self.home = home
        self.executor = executor
        self.transport = transport
        self.problems = problems
        self.threads = threads
        self.progress = progress or (lambda kind, info: None)
        self.control = transport.dict(CONTROL_DICT)
        self.trained: dict[str, str] = {}  # gene key -> adapter cache key (this run)
        self.baseline: dict[str, Any] | None = None
        self.paused = False

    # ------------------------------------------------------------------ the run

    def run(self, resume: ckpt.Checkpoint | None = None) -> str:
        """Run (or continue) to the end; returns the final state: finished or stopped."""
        cfg = self.config
        start_seq = resume.next_seq if resume else 0
        self.events = EventLog(self.run_id, self.home.events_dir(self.run_id), self.transport,
                               start_seq=start_seq)
        if resume is None:
            evo = Evolution(cfg)
            population = evo.initial_population()
            first = 0
            self.events.emit("run_started", {
                "strategy": cfg.strategy, "population": cfg.population,
                "generations": cfg.generations, "seed": cfg.seed,
                "train_problems": self.problems.train, "eval_problems": self.problems.eval,
            })
        else:
            evo = Evolution.from_state(cfg, resume.evolution)
            population = [Genome.model_validate(g) for g in resume.next_population]
            first = resume.generation + 1
            self.trained = {k: v for k, v in (tuple(x) for x in resume.trained_keys)}
            self.baseline = resume.baseline
        write_status(self.home, self.run_id, "running", generation=first)
        try:
            for generation in range(first, cfg.generations):
                population = self._generation(evo, generation, population)
        except RunStopped:
            self.events.emit("run_stopped", {"reason": "stop requested"})
            write_status(self.home, self.run_id, "stopped")
            return "stopped"
        self.events.emit("run_finished", {"generations": cfg.generations,
                                          "survivors": [s.genome.id for s in evo.survivors]})
        write_status(self.home, self.run_id, "finished", generation=cfg.generations - 1)
        return "finished"

    def _generation(self, evo: Evolution, generation: int, population: list[Genome]) -> list[Genome]:
        started = time.time()
        self.events.emit("generation_started", {
            "genomes": [g.id for g in population], "strategy": self.config.strategy,
        }, generation)
        write_status(self.home, self.run_id, "running", generation=generation)
        tasks, hits, misses = self._evaluate(generation, population)
        scores = {t.ident: self._objectives(t) for t in tasks.values()}
        scored = [Scored(g, {n: scores[g.id][n] for n in OBJECTIVES}) for g in population]
        _, info = evo.select(generation, scored)
        last = generation == self.config.generations - 1
        children = [] if last else evo.breed(generation)
        self._emit_generation(generation, population, tasks, scores, scored, evo, info,
                              hits, misses, started)
        ckpt.save(self.home.checkpoints_dir(self.run_id), ckpt.Checkpoint(
            generation=generation,
            population=[g.model_dump(mode="json") for g in population],
            scores={g.id: scores[g.id] for g in population},
            next_population=[g.model_dump(mode="json") for g in children],
            evolution=evo.state(), next_seq=self.events.seq,
            trained_keys=[[k, v] for k, v in sorted(self.trained.items())],
            baseline=self.baseline,
        ))
        self.progress("generation", {"generation": generation, "seconds": time.time() - started})
        return children

    # ------------------------------------------------------------------ the pipeline

    def _evaluate(self, generation: int, population: list[Genome]) -> tuple[dict[str, Task], int, int]:
        """Every genome through its stages; returns tasks by id and (cache hits, misses)."""
        samples = self.config.benchmark.samples
        tasks = {g.id: Task(g.id, g, gene_key(g), samples) for g in population}
        waiting: dict[str, list[Task]] = {}  # gene key -> tasks waiting for its train job
        hits = misses = 0
        for task in tasks.values():  # population order: canonical, so hits/misses are too
            key = task.key or ""
            if key in self.trained:
                hits += 1
                self._submit_generate(generation, task)
            elif key in waiting:
                hits += 1
                waiting[key].append(task)
            else:
                misses += 1
                waiting[key] = [task]
                self._submit_train(generation, task)
        if generation == 0 and self.baseline is None:
            tasks[BASELINE] = Task(BASELINE, None, None, 1)
            self._submit_generate(generation, tasks[BASELINE])
        open_tests = {t.ident: len(self.problems.eval) * t.samples for t in tasks.values()}
        while any(open_tests.values()):
            for result in self._results():
                kind, ident = self._parse(result, generation)
                if not result.ok:
                    raise CoralError(f"{kind} job {result.job_id} failed after "
                                     f"{result.attempt + 1} attempt(s): {result.error}")
                if kind == "train":
                    self.trained[ident] = result.output["cache_key"]
                    for task in waiting.pop(ident, []):
                        task.timings["train"] = result.finished_at - result.started_at
                        self._submit_generate(generation, task)
                elif kind == "gen":
                    task = tasks[ident]
                    task.texts = result.output["texts"]
                    task.timings["generate"] = result.finished_at - result.started_at
                    self._submit_tests(generation, task)
                else:
                    task = tasks[ident]
                    problem, sample = result.job_id.rsplit(":", 2)[-2:]
                    task.tests[(problem, int(sample))] = result
                    open_tests[ident] -= 1
                self.progress("job", self.executor.progress())
        return tasks, hits, misses

    def _results(self) -> Any:
        """Completed jobs as they come; control requests are looked at between them."""
        while True:
            self._check_control()
            try:
                for result in self.executor.stream_results(timeout=CONTROL_POLL):
                    yield result
                    self._check_control()
                return
            except TimeoutError:
                continue

    def _check_control(self) -> None:
        request = (self.control.get(control_key(self.run_id)) or {}).get("request")
        if request == "stop":
            raise RunStopped
        if request == "pause" and not self.paused:
            self.paused = True
            self.events.emit("run_paused", {})
            write_status(self.home, self.run_id, "paused")
            self.progress("paused", {})
        while self.paused:
            time.sleep(CONTROL_POLL)
            request = (self.control.get(control_key(self.run_id)) or {}).get("request")
            if request == "stop":
                raise RunStopped
            if request == "continue":
                self.paused = False
                self.events.emit("run_continued", {})
                write_status(self.home, self.run_id, "running")
                self.progress("continued", {})

    def _parse(self, result: JobResult, generation: int) -> tuple[str, str]:
        parts = result.job_id.split(":")
        if len(parts) < 3 or parts[0] != f"g{generation:04d}":
            raise CoralError(f"unexpected job result {result.job_id!r} in generation {generation}")
        return parts[1], parts[2]

    def _payload_base(self) -> dict[str, Any]:
        return {"model": self.config.model.model_dump(mode="json"), "threads": self.threads}

    def _submit(self, kind: str, job_id: str, payload: dict[str, Any]) -> None:
        self.executor.submit([Job(job_id=job_id, run_id=self.run_id, kind=kind,  # type: ignore[arg-type]
                                  payload=payload)])

    def _submit_train(self, generation: int, task: Task) -> None:
        assert task.genome is not None and task.key is not None
        cfg = self.config
        self._submit("train", f"g{generation:04d}:train:{task.key}", {
            **self._payload_base(), "training": cfg.training.model_dump(mode="json"),
            "genes": task.genome.genes.model_dump(mode="json"),
            "benchmark_root": self.problems.root, "train_problems": self.problems.train,
            "prompt_style": cfg.benchmark.prompt_style,
        })

    def _submit_generate(self, generation: int, task: Task) -> None:
        cfg = self.config
        baseline = task.genome is None
        knobs = baseline_knobs(cfg) if baseline else task.genome.knobs  # type: ignore[union-attr]
        self._submit("generate", f"g{generation:04d}:gen:{task.ident}", {
            **self._payload_base(), "generation": cfg.generation.model_dump(mode="json"),
            "knobs": knobs.model_dump(mode="json"), "prompts": self.problems.prompts,
            "samples": task.samples, "greedy": baseline,
            "seed": generation_seed(cfg.seed, generation, task.ident),
            "cache_key": None if baseline else self.trained[task.key or ""],
        })

    def _submit_tests(self, generation: int, task: Task) -> None:
        assert task.texts is not None
        if len(task.texts) != len(self.problems.eval):
            raise CoralError(f"generate job for {task.ident}: {len(task.texts)} answers for "
                             f"{len(self.problems.eval)} prompts")
        jobs = []
        for name, answers in zip(self.problems.eval, task.texts, strict=True):
            for sample, raw in enumerate(answers):
                jobs.append(Job(job_id=f"g{generation:04d}:test:{task.ident}:{name}:{sample}",
                                run_id=self.run_id, kind="test", payload={
                                    "benchmark_root": self.problems.root, "problem": name,
                                    "raw": raw, "sandbox": self.config.sandbox.model_dump(mode="json"),
                                }))
        self.executor.submit(jobs)

    # ------------------------------------------------------------------ scores and events

    def _objectives(self, task: Task) -> dict[str, float]:
        """coral.objectives.aggregate over eval problems x samples (fixed@k with k = samples)."""
        from coral.objectives import CandidateScore, aggregate

        scores = []
        for name in self.problems.eval:
            for sample in range(task.samples):
                o = task.tests[(name, sample)].output
                scores.append(CandidateScore(problem=name, fixed=bool(o["passed_all"]), cases=(),
                                             **{n: float(o["objectives"][n]) for n in OBJECTIVES}))
        agg = aggregate(scores, task.samples)
        out = {n: getattr(agg, n) for n in OBJECTIVES}
        out["fixed_at_k"] = agg.fixed_at_k
        out["fitness"] = weighted_fitness(out, self.config.objectives.weights)
        return out

    def _job_events(self, generation: int, task: Task) -> list[tuple[Any, dict, int]]:
        out = []
        for name in self.problems.eval:
            for sample in range(task.samples):
                result = task.tests[(name, sample)]
                o = result.output
                out.append(("job_finished", {
                    "genome": task.ident, "problem": name, "sample": sample,
                    "raw": (task.texts or [[]])[self.problems.eval.index(name)][sample],
                    "candidate": o["candidate"], "cases": o["cases"],
                    "objectives": o["objectives"], "passed_all": o["passed_all"],
                    "timings": {"test": result.finished_at - result.started_at,
                                "worker": result.worker, **task.timings},
                }, generation))
        return out

    def _emit_generation(self, generation: int, population: list[Genome], tasks: dict[str, Task],
                         scores: dict[str, dict[str, float]], scored: list[Scored],
                         evo: Evolution, info: dict, hits: int, misses: int, started: float) -> None:
        items: list[tuple[Any, dict, int | None]] = []
        for ident in sorted(t for t in tasks if t != BASELINE):
            items.extend(self._job_events(generation, tasks[ident]))
        if BASELINE in tasks:
            self.baseline = {"objectives": scores[BASELINE], "problems": {
                name: tasks[BASELINE].tests[(name, 0)].output["passed_all"]
                for name in self.problems.eval}}
            items.extend(self._job_events(generation, tasks[BASELINE]))
            items.append(("baseline_finished", {**self.baseline, "knobs": baseline_knobs(
                self.config).model_dump(mode="json"), "greedy": True}, generation))
        names = [*OBJECTIVES, "fixed_at_k", "fitness"]
        ids = [g.id for g in population]
        count, share = phenotype_diversity(scored)
        items.append(("generation_finished", {
            "genomes": {i: scores[i] for i in ids},
            "best": {n: max(scores[i][n] for i in ids) for n in names},
            "mean": {n: sum(scores[i][n] for i in ids) / len(ids) for n in names},
            "genotype_diversity": genotype_diversity(population, self.config),
            "phenotype_diversity": {"distinct": count, "share": share},
            "cache": {"hits": hits, "misses": misses,
                      "hit_rate": hits / (hits + misses) if hits + misses else 0.0},
            "gate": info, "survivors": [s.genome.id for s in evo.survivors],
            "timings": {"wall_seconds": time.time() - started,
                        "cache_found_ready": self.executor.cache_stats().hits,
                        "retries": self.executor.stats.retries},
        }, generation))
        self.events.emit_many(items)


def default_threads(workers: int) -> int:
    """Torch threads per job: the machine's cores shared by the run's workers."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def prompts_for(config: Config, problems: dict[str, Any], names: list[str]) -> list[str]:
    style = config.benchmark.prompt_style
    return [build_prompt(n, problems[n].buggy_source, style) for n in names]


# ---------------------------------------------------------------------- starting and resuming


@dataclass
class RunResult:
    run_id: str
    state: str  # finished | stopped
    wall_seconds: float
    worker_pids: list[int]
    retries: int
    lease_expiries: int
    cache_found_ready: int  # train jobs that found their adapter on disk (recorded only)


def load_problems(config: Config, split: dict[str, list[str]] | None = None) -> Problems:
    from coral.bench.loader import load_benchmark
    from coral.bench.split import split_for_config

    if split is None:
        split = split_for_config(config).as_dict()
    bench = {p.name: p for p in load_benchmark(config.benchmark.root)}
    missing = [n for n in split["train"] + split["eval"] if n not in bench]
    if missing:
        raise CoralError(f"benchmark {config.benchmark.root} has no problem {missing[0]!r} "
                         "named in the run's split")
    return Problems(str(config.benchmark.root), list(split["train"]), list(split["eval"]),
                    prompts_for(config, bench, list(split["eval"])))


def resolve_config(source: Config | str | os.PathLike, overrides: list[str] | None = None,
                   backend: str | None = None, workers: int | None = None) -> Config:
    from coral.config import load_config

    config = source if isinstance(source, Config) else load_config(source, overrides)
    if isinstance(source, Config) and overrides:
        raise CoralError("overrides apply to a config file, not to a Config object")
    update: dict[str, Any] = {}
    if backend is not None:
        update["kind"] = backend
    if workers is not None:
        update["workers"] = workers
    if update:
        from coral.config import BackendConfig

        merged = BackendConfig.model_validate({**config.backend.model_dump(), **update})
        config = config.model_copy(update={"backend": merged})
    return config


def run_from_config(
    config: Config | str | os.PathLike, run_id: str | None = None, backend: str | None = None, *,
    workers: int | None = None, overrides: list[str] | None = None, home: Home | None = None,
    progress: Callable[[str, dict], None] | None = None, threads: int | None = None,
    handlers: str | None = None,
) -> RunResult:
    """Register a new run and run it to the end: the CLI's and the Modal orchestrator's entry.

    `handlers` ("module:attr", a dict kind -> body) replaces job bodies: tests and benchmarks.
    """
    from coral.home import new_run_id
    from coral.runs import register_run

    config = resolve_config(config, overrides, backend, workers)
    home = (home or Home()).ensure()
    run_id = run_id or new_run_id()
    problems = load_problems(config)
    register_run(home, run_id, config, {"train": problems.train, "eval": problems.eval}, handlers)
    progress = progress or (lambda kind, info: None)
    progress("registered", {"run_id": run_id})
    return execute(config, run_id, home, problems, None, progress, threads, handlers)


def resume_run(run_id: str, home: Home | None = None,
               progress: Callable[[str, dict], None] | None = None,
               threads: int | None = None, handlers: str | None = None) -> RunResult:
    """Continue an interrupted run from its last checkpoint (crash recovery)."""
    from coral.runs import effective_state, read_json, run_config, run_record

    home = home or Home()
    config = run_config(home, run_id)
    state = effective_state(read_json(home.run_dir(run_id) / "status.json"))
    if state == "finished":
        raise CoralError(f"run {run_id} already finished; nothing to resume")
    if state in ("running", "paused", "starting"):
        raise CoralError(f"run {run_id} is {state} (its orchestrator is alive); "
                         f"use `coral continue {run_id}` for a paused run")
    record = run_record(home, run_id)
    problems = load_problems(config, record["split"])
    handlers = handlers or record.get("handlers")
    checkpoint = ckpt.latest(home.checkpoints_dir(run_id))
    return execute(config, run_id, home, problems, checkpoint, progress, threads, handlers)


def execute(config: Config, run_id: str, home: Home, problems: Problems,
            resume: ckpt.Checkpoint | None, progress: Callable[[str, dict], None] | None,
            threads: int | None, handlers: str | None = None) -> RunResult:
    from coral.executor import QueueExecutor, SerialExecutor
    from coral.jobs import Handlers
    from coral.transport import open_transport

    kind = config.backend.kind
    started = time.time()
    with open_transport(kind, home=home, config=config) as transport:
        try:
            transport.dict(CONTROL_DICT).pop(control_key(run_id))  # a stale request must not apply
        except KeyError:
            pass
        launcher = None
        executor: Executor
        if kind == "serial":
            executor = SerialExecutor(transport, run_id, config.backend, home=home,
                                      handlers=Handlers.from_spec(handlers))
        else:
            executor = QueueExecutor(transport, run_id, config.backend)
            launcher = _launcher(config, home, run_id, transport, handlers)
            launcher.start()
        engine = EvolutionEngine(config, run_id, home, executor, transport, problems,
                                 threads=threads or default_threads(config.backend.workers),
                                 progress=progress)
        try:
            state = engine.run(resume)
        except CoralError as exc:
            if hasattr(engine, "events"):
                engine.events.emit("run_failed", {"error": str(exc)})
            write_status(home, run_id, "failed", error=str(exc))
            raise
        finally:
            if launcher is not None:
                launcher.stop()
        pids = launcher.pids() if launcher is not None and hasattr(launcher, "pids") else [os.getpid()]
        return RunResult(run_id, state, time.time() - started, pids, executor.stats.retries,
                         executor.stats.lease_expiries, executor.cache_stats().hits)


def _launcher(config: Config, home: Home, run_id: str, transport: Transport,
              handlers: str | None) -> Any:
    kinds = ["train", "generate", "test"]
    if config.backend.kind == "local":
        from coral.workers import LocalWorkerPool

        return LocalWorkerPool(home, config.backend.workers, kinds, handlers=handlers,
                               lease_seconds=config.backend.lease_seconds,
                               log_dir=home.run_dir(run_id) / "workers")
    try:
        from coral.modal_launcher import ModalLauncher
    except ImportError as exc:
        raise CoralError(f"backend {config.backend.kind!r}: launcher unavailable ({exc})") from None
    return ModalLauncher(transport, config, kinds=kinds)


def validate_config_runs(config_path: str | os.PathLike, overrides: list[str] | None = None,
                         workers: int = 2, home: Home | None = None,
                         handlers: str | None = None) -> dict[str, Any]:
    """Run one config with the serial executor and with >= 2 local workers; compare results.

    Both runs use the same torch thread count, so CPU float sums cannot differ between them.
    """
    from coral.home import new_run_id
    from coral.runs import compare_runs

    home = (home or Home()).ensure()
    base = new_run_id()
    threads = default_threads(workers)
    report: dict[str, Any] = {}
    for side, kind in (("serial", "serial"), ("queue", "local")):
        config = resolve_config(config_path, overrides, kind, max(2, workers))
        result = run_from_config(config, f"{base}-{side}", home=home, threads=threads,
                                 handlers=handlers)
        hits = misses = 0
        from coral.events import read_events

        for event in read_events(home.events_dir(result.run_id)):
            if event.type == "generation_finished":
                hits += event.data["cache"]["hits"]
                misses += event.data["cache"]["misses"]
        report[side] = {"run_id": result.run_id, "state": result.state,
                        "wall_seconds": result.wall_seconds, "worker_pids": result.worker_pids,
                        "retries": result.retries, "lease_expiries": result.lease_expiries,
                        "cache_hit_rate": hits / (hits + misses) if hits + misses else 0.0}
    report["identical"] = compare_runs(home, report["serial"]["run_id"], report["queue"]["run_id"])
    return report
