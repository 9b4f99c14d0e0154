"""The evolution engine: a run's generations, pipelined through the executor's job stream.

Per genome: train (or reuse the run's adapter for these heavy genes) -> generate every eval
prompt x samples in one call -> one test job per (problem, sample). Each stage of a genome is
submitted the moment its input arrives, driven by the executor's completion stream, so no genome
waits for another between stages. When a generation's last test is in: objectives, gate +
NSGA-II (Evolution.select), breeding (Evolution.breed), events, checkpoint.

Noise control (docs/engine.md): every genome of a generation samples with the same seed (common
random numbers: the same prompt gets the same random draws whichever genome answers it); the
survivors of generation g-1 are evaluated again in g on that generation's fresh seed, and a
genome's scores are the mean over all its evaluations (Evolution.fold), the count recorded.
The last `evolution.final_rounds` generations breed nothing: the survivors alone are evaluated
again, so the best is chosen on several evaluations. Baselines run in generation 0 on the same
problems, sample count and seed: the model without an adapter at the config's default knobs,
and echo (the buggy program returned unchanged).

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

from coral.benchmark.contamination import report
from coral.benchmark.loader import load_benchmark
from coral.benchmark.problem import Problem
from coral.benchmark.prompts import build_prompt, build_target
from coral.config import Config
from coral.errors import CoralError
from coral.evolution.genome import Genome, Knobs
from coral.evolution.selection import (
    CANDIDATE_OBJECTIVES,
    OBJECTIVES,
    Evolution,
    Scored,
    genotype_diversity,
    phenotype_diversity,
    weighted_fitness,
)
from coral.execution.executor import Executor
from coral.execution.messages import JobResult
from coral.execution.payloads import (
    Contract,
    GenerateOutput,
    GeneratePayload,
    TestOutput,
    TestPayload,
    TrainOutput,
    TrainPayload,
    job_for,
    output_of,
)
from coral.execution.transport.base import Transport
from coral.home import Home
from coral.model.adapters import gene_key
from coral.rng import stream_seed
from coral.run import checkpoints as ckpt
from coral.run.control import CONTROL_DICT, control_key
from coral.run.evaluate import default_knobs, echo_answer
from coral.run.events import EventLog, read_events
from coral.run.progress import ProgressWriter
from coral.run.registry import write_status
from coral.sandbox.objectives import CandidateScore, aggregate

log = logging.getLogger("coral.run.engine")

BASELINE = "baseline"  # the model without an adapter, at the config's default knobs
ECHO = "echo"  # the buggy program returned unchanged
BASELINES = (BASELINE, ECHO)
CONTROL_POLL = 0.5  # seconds between looks at the control dict while waiting


def generation_seed(seed: int, generation: int) -> int:
    """One sampling seed per generation, shared by all its genomes (common random numbers)."""
    return stream_seed(seed, generation, None, "generate") % (2**63 - 1)


def baseline_knobs(config: Config) -> Knobs:
    """The no-adapter baseline samples like a genome, at the default knobs of the config."""
    return default_knobs(config.knobs)


class RunStopped(Exception):
    """A stop request was honoured between jobs."""


@dataclass
class Task:
    """One genome (or the baseline) moving through the stages within one generation."""

    ident: str
    genome: Genome | None  # None for the baselines
    key: str | None  # gene key; None for the baselines
    samples: int
    texts: list[list[str]] | None = None
    fix_chances: list[float] | None = None  # per eval problem, from the generate job
    tests: dict[tuple[str, int], JobResult] = field(default_factory=dict)  # (problem, sample) ->
    outputs: dict[tuple[str, int], TestOutput] = field(default_factory=dict)  # ... and its output
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Problems:
    """The run's benchmark as the engine needs it: eval prompts in order, split lists."""

    root: str
    train: list[str]
    eval: list[str]
    prompts: list[str]
    answers: list[str]  # each eval problem's reference answer (the fix_chance objective)


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
        self.baseline: ckpt.Baseline | None = None
        self.paused = False
        # Set by lifecycle.execute on SIGTERM/SIGINT: the run stops between jobs, resumable.
        self.interrupted: str | None = None
        # Timing-dependent bookkeeping (runs/RUN_ID/progress.json), never in the event log.
        self.live = ProgressWriter(home, run_id, config.generations, config.population)
        self._problems_loaded: list[Problem] | None = None

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
                "contaminated": self._contaminated(),
            })
        else:
            evo = Evolution.from_state(cfg, resume.evolution)
            population = list(resume.next_population)
            first = resume.generation + 1
            self.trained = dict(resume.trained_keys)
            self.baseline = resume.baseline
        write_status(self.home, self.run_id, "running", generation=first)
        try:
            for generation in range(first, cfg.generations):
                population = self._generation(evo, generation, population)
        except RunStopped as stop:
            self.events.emit("run_stopped", {"reason": str(stop) or "stop requested"})
            write_status(self.home, self.run_id, "stopped")
            return "stopped"
        self.events.emit("run_finished", {"generations": cfg.generations,
                                          "survivors": [s.genome.id for s in evo.survivors],
                                          "summary": self._summary(evo)})
        write_status(self.home, self.run_id, "finished", generation=cfg.generations - 1)
        return "finished"

    def _summary(self, evo: Evolution) -> dict[str, Any]:
        """What a reader of the run needs beside its curves: the baselines, the survivors'
        averaged scores and evaluation counts, and the objectives that said nothing."""
        base = self.baseline
        echo = base.echo if base is not None else None
        constant = _constant_objectives(self.home.events_dir(self.run_id), self.run_id)
        return {
            "baselines": {BASELINE: base.objectives if base is not None else None,
                          ECHO: echo.objectives if echo is not None else None},
            "survivors": {s.genome.id: {**s.objectives, "evaluations": evo.count(s.genome.id)}
                          for s in evo.survivors},
            "objectives": {n: "no information" if n in constant else "informative"
                           for n in OBJECTIVES},
            "no_information": constant,
            "contaminated": self._contaminated(),
        }

    def _contaminated(self) -> list[str] | None:
        """Eval problems whose reference or buggy body is in the model's training manifest;
        None when the model has none (unknown). docs/benchmark.md, "Contamination"."""
        names = set(self.problems.eval)
        problems = [p for p in self._benchmark() if p.name in names]
        return report(problems, self.config.model.name)["contaminated"]

    def _generation(self, evo: Evolution, generation: int, population: list[Genome]) -> list[Genome]:
        started = time.time()
        self.events.emit("generation_started", {
            "genomes": [g.id for g in population], "strategy": self.config.strategy,
            "final_round": evo.final_round(generation),
        }, generation)
        write_status(self.home, self.run_id, "running", generation=generation)
        ids = {g.id for g in population}
        again = [s.genome for s in evo.survivors if s.genome.id not in ids]
        tasks, hits, misses = self._evaluate(generation, population + again)
        raw = {t.ident: self._objectives(t) for t in tasks.values()}
        scores = {**{b: raw[b] for b in BASELINES if b in raw},
                  **evo.fold({i: raw[i] for i in raw if i not in BASELINES})}
        counts = {i: evo.count(i) for i in scores if i not in BASELINES}
        scored = [Scored(g, {n: scores[g.id][n] for n in OBJECTIVES}) for g in population]
        _, info = evo.select(generation, scored)
        # The next generation is a final round (or there is none): nothing new is bred, and the
        # survivors alone are evaluated again (docs/engine.md, "Final rounds").
        children = [] if evo.final_round(generation + 1) else evo.breed(generation)
        self._emit_generation(generation, population + again, tasks, scores, scored, evo, info,
                              hits, misses, started, counts, [g.id for g in again])
        ckpt.save(self.home.checkpoints_dir(self.run_id), ckpt.Checkpoint(
            generation=generation,
            population=population,
            scores={g.id: scores[g.id] for g in population + again},
            next_population=children,
            evolution=evo.state(), next_seq=self.events.seq,
            trained_keys=sorted(self.trained.items()),
            baseline=self.baseline,
        ))
        self.live.generation_finished(generation)
        self.executor.forget(generation)  # memory grows with one generation's jobs, not the run's
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
            tasks[BASELINE] = Task(BASELINE, None, None, samples)
            self._submit_generate(generation, tasks[BASELINE])
            # Echo is deterministic: one sample says all that more would.
            # Echo writes the buggy program, never the reference edit: fix_chance 0 on every problem.
            tasks[ECHO] = Task(ECHO, None, None, 1, texts=self._echo_texts(),
                               fix_chances=[0.0] * len(self.problems.eval))
            self._submit_tests(generation, tasks[ECHO])
        open_tests = {t.ident: len(self.problems.eval) * t.samples for t in tasks.values()}
        # Every job of the generation is known now: one train job per gene key not yet trained,
        # one generate job per task, one test per task x eval problem x sample.
        generate = sum(1 for t in tasks if t != ECHO)  # echo answers without a model
        self.live.generation_started(generation, {"train": misses, "generate": generate,
                                                  "test": sum(open_tests.values())})
        while any(open_tests.values()):
            for result in self._results():
                kind, ident = self._route(result, generation)
                self.live.job_done(kind, result.ok, result.finished_at - result.started_at)
                if not result.ok:
                    raise CoralError(f"{kind} job {result.job_id} failed after "
                                     f"{result.attempt + 1} attempt(s): {result.error}")
                if kind == "train":
                    self.trained[ident] = output_of(result, TrainOutput).cache_key
                    for task in waiting.pop(ident, []):
                        task.timings["train"] = result.finished_at - result.started_at
                        self._submit_generate(generation, task)
                elif kind == "generate":
                    task = tasks[ident]
                    generated = output_of(result, GenerateOutput)
                    task.texts, task.fix_chances = generated.texts, generated.fix_chances
                    task.timings["generate"] = result.finished_at - result.started_at
                    self._submit_tests(generation, task)
                else:
                    task = tasks[ident]
                    where = (result.problem or "", result.sample or 0)
                    task.outputs[where] = output_of(result, TestOutput)
                    task.tests[where] = result
                    open_tests[ident] -= 1
                    if open_tests[ident] == 0 and ident not in BASELINES:
                        # Shown the moment it lands; the events come in order at the generation's end.
                        self.live.genome_scored(generation, ident, self._objectives(task))
                counts = self.executor.progress(generation)
                self.live.states(counts)
                self.live.flush()
                self.progress("job", counts)
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
        if self.interrupted:
            raise RunStopped(self.interrupted)
        request = (self.control.get(control_key(self.run_id)) or {}).get("request")
        if request == "stop":
            raise RunStopped
        if request == "pause" and not self.paused:
            self.paused = True
            self.events.emit("run_paused", {})
            write_status(self.home, self.run_id, "paused")
            self.live.paused(True)
            self.progress("paused", {})
        while self.paused:
            # Workers start nothing of this run while it is paused (coral/run/control.py); the
            # executor keeps taking in what finishes, so the page can show what is still running.
            self.executor.watch(CONTROL_POLL)
            generation = self.live.data.get("generation")
            if generation is not None:
                self.live.states(self.executor.progress(generation))
                self.live.flush()
            request = (self.control.get(control_key(self.run_id)) or {}).get("request")
            if self.interrupted:
                raise RunStopped(self.interrupted)
            if request == "stop":
                raise RunStopped
            if request == "continue":
                self.paused = False
                self.events.emit("run_continued", {})
                write_status(self.home, self.run_id, "running")
                self.live.paused(False)
                self.progress("continued", {})

    def _route(self, result: JobResult, generation: int) -> tuple[str, str]:
        """(stage, subject) from the result's typed fields; the job id is never parsed."""
        if result.generation != generation or not result.subject:
            raise CoralError(f"unexpected job result {result.job_id!r} (generation "
                             f"{result.generation}, subject {result.subject!r}) in generation "
                             f"{generation}")
        return result.kind, result.subject

    def _submit(self, payload: Contract, job_id: str, generation: int, subject: str) -> None:
        self.executor.submit([job_for(payload, job_id=job_id, run_id=self.run_id,
                                      generation=generation, subject=subject)])

    def _submit_train(self, generation: int, task: Task) -> None:
        assert task.genome is not None and task.key is not None
        cfg = self.config
        self._submit(TrainPayload(
            model=cfg.model, threads=self.threads, training=cfg.training, genes=task.genome.genes,
            benchmark_root=self.problems.root, train_problems=self.problems.train,
            prompt_style=cfg.benchmark.prompt_style,
        ), f"g{generation:04d}:train:{task.key}", generation, task.key)

    def _echo_texts(self) -> list[list[str]]:
        problems = {p.name: p for p in self._benchmark()}
        return [[echo_answer(problems[name])] for name in self.problems.eval]

    def _benchmark(self) -> list[Problem]:
        """The run's benchmark, loaded once per engine (parsing 476 instances takes seconds)."""
        if self._problems_loaded is None:
            self._problems_loaded = load_benchmark(self.problems.root)
        return self._problems_loaded

    def _submit_generate(self, generation: int, task: Task) -> None:
        cfg = self.config
        baseline = task.genome is None
        knobs = baseline_knobs(cfg) if task.genome is None else task.genome.knobs
        self._submit(GeneratePayload(
            model=cfg.model, threads=self.threads, generation=cfg.generation, knobs=knobs,
            prompts=self.problems.prompts, samples=task.samples, greedy=False,
            seed=generation_seed(cfg.seed, generation),
            cache_key=None if baseline else self.trained[task.key or ""],
            answers=self.problems.answers, fix_chance_k=cfg.objectives.fix_chance_k,
        ), f"g{generation:04d}:gen:{task.ident}", generation, task.ident)

    def _submit_tests(self, generation: int, task: Task) -> None:
        assert task.texts is not None
        if len(task.texts) != len(self.problems.eval):
            raise CoralError(f"generate job for {task.ident}: {len(task.texts)} answers for "
                             f"{len(self.problems.eval)} prompts")
        if task.fix_chances is None or len(task.fix_chances) != len(self.problems.eval):
            raise CoralError(f"generate job for {task.ident}: no fix_chance for each of the "
                             f"{len(self.problems.eval)} prompts")
        jobs = []
        for name, answers in zip(self.problems.eval, task.texts, strict=True):
            for sample, raw in enumerate(answers):
                jobs.append(job_for(
                    TestPayload(benchmark_root=self.problems.root, problem=name, raw=raw,
                                sandbox=self.config.sandbox),
                    job_id=f"g{generation:04d}:test:{task.ident}:{name}:{sample}", run_id=self.run_id,
                    generation=generation, subject=task.ident, problem=name, sample=sample))
        self.executor.submit(jobs)

    # ------------------------------------------------------------------ scores and events

    def _objectives(self, task: Task) -> dict[str, float]:
        """coral.sandbox.objectives.aggregate over eval problems x samples (fixed@k with k = samples),
        and fix_chance's mean over eval problems (each problem weighs the same in both)."""

        scores = []
        for name in self.problems.eval:
            for sample in range(task.samples):
                o = task.outputs[(name, sample)]
                values: dict[str, Any] = {n: o.objectives[n] for n in CANDIDATE_OBJECTIVES}
                scores.append(CandidateScore(problem=name, fixed=o.passed_all, cases=(), **values))
        agg = aggregate(scores, task.samples)
        out = {n: getattr(agg, n) for n in CANDIDATE_OBJECTIVES}
        chances = task.fix_chances or []
        out["fix_chance"] = sum(chances) / len(chances)
        out["fixed_at_k"] = agg.fixed_at_k
        out["fitness"] = weighted_fitness(out, self.config.objectives.weights)
        return out

    def _baseline_record(self, task: Task, objectives: dict[str, float]) -> ckpt.BaselineScores:
        """Objectives, samples and, per problem, whether any sample fixed it."""
        return ckpt.BaselineScores(objectives=objectives, samples=task.samples, problems={
            name: any(task.outputs[(name, s)].passed_all for s in range(task.samples))
            for name in self.problems.eval})

    def _job_events(self, generation: int, task: Task) -> list[tuple[Any, dict, int]]:
        out = []
        for index, name in enumerate(self.problems.eval):
            for sample in range(task.samples):
                result = task.tests[(name, sample)]
                o = task.outputs[(name, sample)]
                out.append(("job_finished", {
                    "genome": task.ident, "problem": name, "sample": sample,
                    "raw": (task.texts or [[]])[index][sample],
                    "candidate": o.candidate, "cases": [c.model_dump(mode="json") for c in o.cases],
                    "objectives": {**o.objectives, "fix_chance": (task.fix_chances or [])[index]},
                    "passed_all": o.passed_all, "meter": o.meter,
                    "timings": {"test": result.finished_at - result.started_at,
                                "worker": result.worker, **task.timings},
                }, generation))
        return out

    def _emit_generation(self, generation: int, population: list[Genome], tasks: dict[str, Task],
                         scores: dict[str, dict[str, float]], scored: list[Scored],
                         evo: Evolution, info: dict, hits: int, misses: int, started: float,
                         counts: dict[str, int], again: list[str]) -> None:
        """`population` holds this generation's genomes and the survivors evaluated again;
        `scores` are means over each genome's evaluations, `counts` how many."""
        items: list[tuple[Any, dict, int | None]] = []
        for ident in sorted(t for t in tasks if t not in BASELINES):
            items.extend(self._job_events(generation, tasks[ident]))
        if BASELINE in tasks:
            record = self._baseline_record(tasks[BASELINE], scores[BASELINE])
            self.baseline = ckpt.Baseline(
                objectives=record.objectives, samples=record.samples, problems=record.problems,
                knobs=baseline_knobs(self.config), greedy=False,
                seed=generation_seed(self.config.seed, generation),
                echo=self._baseline_record(tasks[ECHO], scores[ECHO]))
            items.extend(self._job_events(generation, tasks[BASELINE]))
            items.extend(self._job_events(generation, tasks[ECHO]))
            items.append(("baseline_finished", self.baseline.as_json(), generation))
        names = [*OBJECTIVES, "fixed_at_k", "fitness"]
        ids = [g.id for g in population]
        count, share = phenotype_diversity(scored)
        items.append(("generation_finished", {
            "genomes": {i: scores[i] for i in ids},
            "evaluations": {i: counts[i] for i in ids}, "reevaluated": again,
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


def _constant_objectives(events_dir: Any, run_id: str) -> list[str]:
    """Objectives whose candidate-level value never changed over the run's genomes' tests:
    they carry no information about any genome (baselines left out)."""
    low: dict[str, float] = {}
    high: dict[str, float] = {}
    for event in read_events(events_dir, run_id=run_id):
        if event.type != "job_finished" or event.data.get("genome") in BASELINES:
            continue
        for name in OBJECTIVES:
            value = float(event.data["objectives"][name])
            low[name] = min(low.get(name, value), value)
            high[name] = max(high.get(name, value), value)
    return [n for n in OBJECTIVES if n in low and high[n] - low[n] < 1e-12]


def default_threads(workers: int) -> int:
    """Torch threads per job: the machine's cores shared by the run's workers."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def prompts_for(config: Config, problems: dict[str, Any], names: list[str]) -> list[str]:
    style = config.benchmark.prompt_style
    return [build_prompt(n, problems[n].buggy_source, style) for n in names]


def answers_for(problems: dict[str, Any], names: list[str]) -> list[str]:
    """The reference answer of each problem: the line edit a trained adapter writes for it."""
    return [build_target(problems[n].buggy_source, problems[n].correct_source) for n in names]
