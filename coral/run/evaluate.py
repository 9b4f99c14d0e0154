"""Evaluate one model (and optional adapter) on a benchmark: `coral bench eval`, baselines, bench/.

The same stages a run's genome goes through (prompt -> generate -> extract -> sandboxed tests
-> objectives), in one process and without a run: every problem of the chosen split x `samples`
answers, scored by coral.sandbox.objectives. `echo` candidates (the buggy program returned
unchanged) go through the same scoring, so the floor every model has to beat is measured the
same way.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from coral.benchmark.extract import extract_candidate
from coral.benchmark.loader import load_benchmark
from coral.benchmark.mutate import read_manifest
from coral.benchmark.problem import Problem
from coral.benchmark.prompts import build_prompt, build_target
from coral.benchmark.split import load_split
from coral.config import Config, KnobSpace
from coral.errors import CoralError
from coral.evolution.genome import Knobs
from coral.evolution.selection import CANDIDATE_OBJECTIVES
from coral.sandbox.objectives import CandidateScore, fixed_at_k, score_candidates
from coral.sandbox.runner import RunnerLimits, reference

SplitChoice = Literal["eval", "train", "all"]
SPLITS: tuple[str, ...] = ("eval", "train", "all")


def default_knobs(space: KnobSpace) -> Knobs:
    """The knobs an untuned model gets (no-adapter baseline, `coral bench eval`): the middle of
    each sampling range, no repetition penalty (its low end), the longest answer allowed."""
    return Knobs(
        temperature=round((space.temperature[0] + space.temperature[1]) / 2, 6),
        top_p=round((space.top_p[0] + space.top_p[1]) / 2, 6),
        top_k=int(round((space.top_k[0] + space.top_k[1]) / 2)),
        repetition_penalty=space.repetition_penalty[0],
        max_new_tokens=max(space.max_new_tokens),
    )


def select_problems(root: Path, split: SplitChoice, split_path: Path | None = None,
                    classes: Sequence[str] | None = None) -> list[Problem]:  # fmt: skip
    """The problems of one side of the benchmark's split (or all), in name order; with `classes`,
    only the instances of those bug classes (ROOT/mutants.json, `coral bench mutate`)."""
    if split not in SPLITS:
        raise CoralError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    problems = load_benchmark(root)
    if classes is not None:
        problems = [p for p in problems if p.name in instances_of(root, classes)]
    if split == "all":
        return problems
    chosen = set(getattr(load_split(root, split_path), split))
    return [p for p in problems if p.name in chosen]


def instances_of(root: Path, classes: Sequence[str]) -> set[str]:
    """Names of ROOT's bug instances of `classes`; one clear line for a plain benchmark (no bug
    classes recorded) or a class the benchmark does not have."""
    from coral.benchmark.mutate import BUG_CLASSES

    manifest = read_manifest(root)
    if manifest is None:
        raise CoralError(f"{root} has no mutants.json: only a `coral bench mutate` benchmark has bug classes")
    present = {str(i.get("bug_class")) for i in manifest["instances"]}
    unknown = [c for c in classes if c not in present]
    if unknown or not classes:
        known = [c for c in BUG_CLASSES if c in present]
        raise CoralError(f"no instances of bug class {', '.join(unknown) or '(none given)'} in {root} "
                         f"(it has: {', '.join(known)})")  # fmt: skip
    return {str(i["name"]) for i in manifest["instances"] if i.get("bug_class") in classes}


def echo_answer(problem: Problem) -> str:
    """The buggy program, fenced as a model would answer: the echo baseline's one answer."""
    return f"{problem.buggy_source.strip()}\n```\n"


@dataclass(frozen=True)
class ProblemResult:
    name: str
    family: str
    samples: tuple[CandidateScore, ...]

    @property
    def fixed(self) -> bool:
        return any(s.fixed for s in self.samples)

    def mean(self, objective: str) -> float:
        return sum(getattr(s, objective) for s in self.samples) / len(self.samples)

    @property
    def passed(self) -> float:
        """Mean share of cases passed (not an objective: echo keeps every case the bug spares)."""
        return sum(sum(c.passed for c in s.cases) / len(s.cases) if s.cases else 0.0
                   for s in self.samples) / len(self.samples)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "fixed": self.fixed,
                "bugfix": self.mean("bugfix"), "fixed_samples": sum(s.fixed for s in self.samples),
                "passed": self.passed,
                **{o: self.mean(o) for o in CANDIDATE_OBJECTIVES if o != "bugfix"}}


Progress = Callable[[str], None]
SCORE_CHUNK = 100  # candidates scored per batch when progress is reported (batching is exact)


def score_answers(
    problems: Sequence[Problem], answers: Sequence[Sequence[str]], limits: RunnerLimits,
    root: Path | None = None, log: Progress | None = None,
) -> list[ProblemResult]:
    """Extract and score answers[i][j] (problem i, sample j); families from ROOT/mutants.json.
    With `log`, one line per SCORE_CHUNK candidates scored."""
    items = [(p, extract_candidate(raw, p.name, p.buggy_source))
             for p, group in zip(problems, answers, strict=True) for raw in group]
    for problem in problems:
        # The references first, one at a time (each is cached): splitting a pytest-style test
        # file raced when several problems did it at once in score_candidates' threads.
        reference(problem, limits)
    if log is None:
        scores = score_candidates(items, limits=limits)
    else:
        scores = []
        for start in range(0, len(items), SCORE_CHUNK):
            scores += score_candidates(items[start:start + SCORE_CHUNK], limits=limits)
            log(f"scored {len(scores)}/{len(items)} candidates")
    manifest = read_manifest(root) if root is not None else None
    family = {str(i["name"]): str(i["family"]) for i in manifest["instances"]} if manifest else {}
    by_problem: dict[str, list[CandidateScore]] = defaultdict(list)
    for score in scores:
        by_problem[score.problem].append(score)
    return [ProblemResult(p.name, family.get(p.name, p.name), tuple(by_problem[p.name]))
            for p in problems]


def summarise(results: Sequence[ProblemResult], k: int) -> dict[str, Any]:
    """fixed@k, objective means with standard errors over problems, and per-problem rows."""
    if not results:
        raise CoralError("no problems to evaluate")
    out: dict[str, Any] = {"k": k, "fixed": sum(r.fixed for r in results), "total": len(results)}
    out["fixed_at_k"] = sum(fixed_at_k(len(r.samples), sum(s.fixed for s in r.samples), k)
                            for r in results) / len(results)
    for objective in CANDIDATE_OBJECTIVES:
        mean, se = mean_se([r.mean(objective) for r in results])
        out[objective] = mean
        out[f"{objective}_se"] = se
    out["passed"] = sum(r.passed for r in results) / len(results)
    out["problems"] = [r.as_dict() for r in results]
    return out


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample sd / sqrt n; 0 for fewer than two values)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def evaluate_model(
    root: Path, config: Config, *, adapter: Path | None = None, samples: int = 1,
    split: SplitChoice = "eval", seed: int = 0, knobs: Knobs | None = None,
    split_path: Path | None = None, classes: Sequence[str] | None = None,
    log: Progress | None = None, echo: bool = False,
) -> dict[str, Any]:
    """Generate `samples` answers per problem with config.model (+ adapter) and score them.

    `classes` keeps the instances of those bug classes only; `log` gets progress lines (the
    CLI sends them to stderr); `echo=True` adds the echo baseline on the same problems.
    """
    problems = select_problems(root, split, split_path, classes)
    if not problems:
        raise CoralError(f"no problems to evaluate in {root} (split {split})")
    out = evaluate_problems(problems, root, config, adapter=adapter, samples=samples, seed=seed,
                            knobs=knobs, log=log, echo=echo)
    return {**{k: out[k] for k in ("k", "fixed", "total", "model", "adapter")}, "split": split, "seed": seed,
            "classes": list(classes) if classes else None,
            **{k: v for k, v in out.items() if k not in ("k", "fixed", "total", "model", "adapter", "seed")}}


def evaluate_problems(
    problems: Sequence[Problem], root: Path, config: Config, *, adapter: Path | None = None,
    samples: int = 1, seed: int = 0, knobs: Knobs | None = None, log: Progress | None = None,
    echo: bool = False, base: Any = None,
) -> dict[str, Any]:
    """`evaluate_model` on the given problems of ROOT; `base`: config.model already loaded
    (coral.model.loading.load_base_model), so several evaluations load it once."""
    import time

    from coral.model.generate import generate_for_genome
    from coral.model.likelihood import fix_chances
    from coral.model.loading import load_base_model

    if adapter is not None and not Path(adapter).is_dir():
        raise CoralError(f"adapter folder not found: {adapter}")
    if not problems:
        raise CoralError(f"no problems to evaluate in {root}")
    say: Progress = log or (lambda _line: None)
    knobs = knobs or default_knobs(config.knobs)
    style = config.benchmark.prompt_style
    prompts = [build_prompt(p.name, p.buggy_source, style) for p in problems]
    rows = [prompt for prompt in prompts for _ in range(samples)]
    started = time.perf_counter()
    if base is None:
        say(f"loading {config.model.name}")
        base = load_base_model(config.model)
    say(f"generating {len(rows)} answers ({len(problems)} problems x {samples})"
        + (f" with adapter {adapter}" if adapter else ""))

    def generated(done: int, total: int) -> None:
        say(f"generated {done}/{total} answers ({time.perf_counter() - started:.0f}s)")

    texts = generate_for_genome(base, adapter, rows, knobs, seed, config.generation, progress=generated)
    answers = [texts[i * samples:(i + 1) * samples] for i in range(len(problems))]
    say("computing fix_chance (one forward pass per problem)")
    chances = fix_chances(base, adapter, prompts, [build_target(p.buggy_source, p.correct_source) for p in problems],
                          knobs, config.generation, config.objectives.fix_chance_k)
    limits = RunnerLimits.from_config(config.sandbox)
    results = score_answers(problems, answers, limits, root, log=say)
    summary = summarise(results, samples)
    summary["fix_chance"], summary["fix_chance_se"] = mean_se(chances)
    for row, chance in zip(summary["problems"], chances, strict=True):
        row["fix_chance"] = chance
    out = {**{k: summary[k] for k in ("k", "fixed", "total")},
           "model": config.model.name, "adapter": str(adapter) if adapter else None, "seed": seed,
           "knobs": knobs.model_dump(mode="json"),
           **{k: v for k, v in summary.items() if k not in ("k", "fixed", "total")}}
    if echo:
        say("scoring echo (the buggy programs unchanged)")
        echoed = summarise(score_answers(problems, [[echo_answer(p)] for p in problems], limits, root), 1)
        out["echo"] = {**{k: v for k, v in echoed.items() if k != "problems"}, "fix_chance": 0.0}
    say(f"done ({time.perf_counter() - started:.0f}s)")
    return out


def evaluate_echo(root: Path, config: Config, split: SplitChoice = "eval",
                  split_path: Path | None = None, classes: Sequence[str] | None = None) -> dict[str, Any]:
    """The echo baseline: every problem answered with its own buggy program."""
    problems = select_problems(root, split, split_path, classes)
    answers = [[echo_answer(p)] for p in problems]
    results = score_answers(problems, answers, RunnerLimits.from_config(config.sandbox), root)
    return {**summarise(results, 1), "model": "echo", "split": split}
