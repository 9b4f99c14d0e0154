"""The five objectives of a candidate fix, each in [0, 1], and their means per genome (the sixth,
fix_chance, is the model's: coral.model.likelihood).

Formulas and the reasons behind them: docs/objectives.md. In short, per candidate:

    bugfix   = max(0, repaired - broken) / cases the buggy program fails      (sandboxed runs)
               repaired: cases the buggy program fails that the candidate passes;
               broken: cases the buggy program passes that the candidate fails
    syntax   = 1 if the code compiles, else 0              (code alone, coral.sandbox.quality)
    style    = 1 - max(0, violation density - the reference's)             (code alone, ruff)
    security = 1 - min(1, max(0, risk - the buggy program's risk) / 9)
               (code alone: bandit weights + the AST policy of coral.sandbox.quality)
    runtime  = min(1, reference cost / candidate cost)       (whole runs, counted outside the box)

Only runtime needs a passing case (0 without one: there is no like-for-like cost to compare);
syntax, style and security are computed for every candidate, never gated on tests. Costs are counted
by the kernel for the box's processes (docs/sandbox.md, "Cost"): instructions where the CPU
exposes a counter (repeatable to a fraction of a percent), else CPU time (which varies with
the machine and its load); the candidate can raise its cost, never lower it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from math import comb
from pathlib import Path

from coral.benchmark.problem import Problem
from coral.evolution.selection import CANDIDATE_OBJECTIVES
from coral.sandbox.box import METER_RATES
from coral.sandbox.quality import (
    SECURITY_SCALE,
    relative_security,
    relative_style,
    risk,
    risk_findings,
    syntax_score,
    violation_density,
)
from coral.sandbox.runner import (
    CandidateRun,
    CaseResult,
    OncePerKey,
    RunnerLimits,
    problem_key,
    reference,
    run_candidate,
)

RUFF_RULES = "E,W,F,B,C90"  # pycodestyle, pyflakes, bugbear, complexity: fixed, so stable
RUFF_ARGS = ("--line-length", "100", "--target-version", "py311")
BANDIT_SKIPS = "B101"  # assert: a fair self-check in a small program, not a vulnerability
# UNANALYSED: a file the tool could not analyse scores as the worst (fail closed): a
# candidate must not escape a linter by crashing it (a 1,600-deep `~` chain made bandit skip).
SEVERITY_WEIGHTS = {"LOW": 1.0, "MEDIUM": 3.0, "HIGH": 9.0, "UNANALYSED": 1e6}
RUFF_FAILED = "ruff-failed"  # the style "violation" of a file ruff could not lint


@dataclass(frozen=True)
class CandidateScore:
    problem: str
    bugfix: float
    syntax: float
    style: float
    security: float
    runtime: float
    fixed: bool
    cases: tuple[CaseResult, ...]
    style_violations: tuple[str, ...] = ()  # ruff codes, one per violation
    security_issues: tuple[str, ...] = ()  # "B602:HIGH", one per issue
    error: str | None = None
    meter: str | None = None  # what counted `runtime`'s cost (CandidateRun.meter)

    def objectives(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in CANDIDATE_OBJECTIVES}


@dataclass(frozen=True)
class GenomeObjectives:
    bugfix: float
    syntax: float
    style: float
    security: float
    runtime: float
    fixed_at_k: float
    k: int
    problems: int
    candidates: int

    def objectives(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in CANDIDATE_OBJECTIVES}


# --- per-candidate scores -------------------------------------------------------------------


# The meter is a measurement: CPU time where the machine has no instruction counter, and the
# same program measured twice on a loaded 2-core machine differed by up to 1.8x (bench/RESULTS.md).
# Selection must repeat exactly (docs/architecture.md, "Determinism"), so the runtime objective
# is banded by powers of two: "within 2x of the reference" is 1, then 0.5, 0.25, 0.125. Noise
# moves a score only for a candidate whose cost sits near a band edge.
RUNTIME_BANDS = ((2.0, 1.0), (4.0, 0.5), (8.0, 0.25))
RUNTIME_FLOOR = 0.125  # beyond 8x (the per-case budget, 10x by default, ends most such runs)
# The meter's resolution, in CPU-seconds: less work than this is not told apart. Without a
# hardware counter the meter is the task clock, and the same sub-millisecond program measured
# twice differs by up to 2x (a cache miss, a busy sibling core): below this, "as fast as the
# reference" is all that can be said, on every backend alike.
RUNTIME_RESOLUTION = 0.001


def runtime_score(run: CandidateRun, reference_cost: int) -> float:
    """The candidate's whole-run cost relative to the reference's, both raised to the meter's
    resolution (RUNTIME_RESOLUTION), banded (RUNTIME_BANDS): costs are counted outside the box
    (coral.sandbox.runner); per-case costs are not used, since a candidate can move cost between
    its own cases but cannot lower the total. 0 when no case passes."""
    if run.passed == 0:
        return 0.0
    floor = max(1, int(RUNTIME_RESOLUTION * METER_RATES.get(run.meter or "", 1e9)))
    ratio = max(floor, run.cost) / max(floor, reference_cost)
    return next((score for edge, score in RUNTIME_BANDS if ratio <= edge), RUNTIME_FLOOR)


def code_lines(source: str) -> int:
    """Lines holding code: neither blank nor comment-only."""
    return sum(1 for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def repair_score(run: CandidateRun, buggy: CandidateRun) -> float:
    """Credit for repair, case by case against the buggy program's own run: 0 for the buggy
    program returned unchanged, 1 for passing every case it fails while keeping every case it
    passes; each case it passed and the candidate fails (a regression) takes one repaired case
    back. A problem whose buggy program fails no case has nothing to repair: the pass rate."""
    passed = {case.case_id for case in run.cases if case.passed}
    failing = [case.case_id for case in buggy.cases if not case.passed]
    if not failing:
        return run.passed / run.total if run.total else 0.0
    repaired = sum(1 for case in failing if case in passed)
    broken = sum(1 for case in buggy.cases if case.passed and case.case_id not in passed)
    return max(0, repaired - broken) / len(failing)


def score_run(
    run: CandidateRun,
    source: str,
    reference_cost: int,
    style: tuple[float, tuple[str, ...]],
    security: tuple[float, tuple[str, ...]],
    buggy: CandidateRun,
) -> CandidateScore:
    """`style` and `security` are already relative (relative_quality); none of them is gated.
    `buggy` is the problem's buggy program's own run (bugfix credits repair against it)."""
    return CandidateScore(
        problem=run.problem,
        bugfix=repair_score(run, buggy),
        syntax=syntax_score(source),
        style=style[0],
        security=security[0],
        runtime=runtime_score(run, reference_cost),
        fixed=run.fixed,
        cases=run.cases,
        style_violations=style[1],
        security_issues=security[1],
        error=run.error,
        meter=run.meter,
    )


# The buggy program's own run, once per process, problem content and limits (it runs as a
# candidate, so every limit can change it), like the reference's (coral.sandbox.runner.reference):
# a property of the problem, the yardstick of bugfix's repair credit; no candidate's result is
# ever cached.
_buggy_runs: OncePerKey[tuple[str, RunnerLimits], CandidateRun] = OncePerKey()


def buggy_run(problem: Problem, limits: RunnerLimits | None = None) -> CandidateRun:
    """The problem's buggy program through the same runner as a candidate, cached."""
    limits = limits or RunnerLimits()
    return _buggy_runs.get((own_key(problem), limits),
                           lambda: run_candidate(problem, problem.buggy_source, limits))


# The problem's own programs, linted once per process and problem content: the reference's
# violation density (style's yardstick) and the buggy program's risk (security's).
_own: dict[str, tuple[float, float]] = {}
_own_lock = threading.Lock()


def own_key(problem: Problem) -> str:
    """problem_key covers what decides the reference run; the buggy program matters here too."""
    return hashlib.sha256(f"{problem_key(problem)}\0{problem.buggy_source}".encode()).hexdigest()


def own_quality(problems: Sequence[Problem]) -> dict[str, tuple[float, float]]:
    """own_key -> (reference violation density, buggy program risk), cached."""
    with _own_lock:
        todo = {own_key(p): p for p in problems if own_key(p) not in _own}
    if todo:
        refs = [p.correct_source for p in todo.values()]
        bugs = [p.buggy_source for p in todo.values()]
        styles, risks = style_scores(refs), security_scores(bugs)
        with _own_lock:
            for key, src, (_, codes), bug, (_, issues) in zip(
                todo, refs, styles, bugs, risks, strict=True
            ):
                _own[key] = (violation_density(len(codes), code_lines(src)),
                             risk(bandit_weight(issues), risk_findings(bug)))
    with _own_lock:
        return {own_key(p): _own[own_key(p)] for p in problems}


def relative_quality(
    source: str, own: tuple[float, float],
    style: tuple[float, tuple[str, ...]], security: tuple[float, tuple[str, ...]],
) -> tuple[tuple[float, tuple[str, ...]], tuple[float, tuple[str, ...]]]:
    """(style, security) of a candidate against its problem's reference and buggy program;
    the issue lists carry ruff codes, and bandit ids plus policy findings ("policy:CODE")."""
    lines = code_lines(source)
    findings = risk_findings(source)
    candidate_risk = risk(bandit_weight(security[1]), findings)
    style_score = 0.0 if RUFF_FAILED in style[1] else relative_style(
        violation_density(len(style[1]), lines), own[0], lines)
    return (
        (style_score, style[1]),
        (relative_security(candidate_risk, own[1]),
         tuple(sorted(security[1] + tuple(f"policy:{f}" for f in findings)))),
    )


def score_candidate(problem: Problem, candidate_source: str, limits: RunnerLimits | None = None) -> CandidateScore:
    return score_candidates([(problem, candidate_source)], limits=limits)[0]


def score_candidates(
    items: Sequence[tuple[Problem, str]],
    limits: RunnerLimits | None = None,
    workers: int | None = None,
) -> list[CandidateScore]:
    """Score many candidates: sandboxes in parallel, ruff and bandit once for the whole batch.

    Each distinct problem's reference fix runs once per process first (coral.sandbox.runner
    caches it): it calibrates the candidates' budgets and is the runtime objective's yardstick.
    So does its buggy program (buggy_run): bugfix's yardstick.
    """
    workers = workers or max(1, os.cpu_count() or 1)
    sources = [src for _, src in items]
    # The linters run over every candidate while the sandboxes run (their start-up, bandit's
    # above all, then costs no extra wall time).
    with ThreadPoolExecutor(2) as linters, ThreadPoolExecutor(workers) as pool:
        style_future = linters.submit(style_scores, sources)
        security_future = linters.submit(security_scores, sources)
        own_future = linters.submit(own_quality, [p for p, _ in items])
        problems = {problem_key(p): p for p, _ in items}
        done = dict(zip(problems, pool.map(lambda p: reference(p, limits), problems.values()), strict=True))
        refs = [done[problem_key(p)].run.cost for p, _ in items]
        distinct = {own_key(p): p for p, _ in items}
        buggy = dict(zip(distinct, pool.map(lambda p: buggy_run(p, limits), distinct.values()), strict=True))
        runs = list(pool.map(lambda it: run_candidate(it[0], it[1], limits), items))
        styles, securities, own = style_future.result(), security_future.result(), own_future.result()
    relative = [relative_quality(src, own[own_key(p)], style, security)
                for (p, src), style, security in zip(items, styles, securities, strict=True)]
    return [
        score_run(run, src, ref, style, security, buggy[own_key(p)])
        for (p, src), run, ref, (style, security) in zip(items, runs, refs, relative, strict=True)
    ]


# --- linters --------------------------------------------------------------------------------


def _tool(name: str) -> list[str]:
    """The tool next to our interpreter (the venv), else on PATH, else `python -m`."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return [str(beside)]
    found = shutil.which(name)
    return [found] if found else [sys.executable, "-m", name]


def _lint_batch(sources: Sequence[str], argv: list[str]) -> tuple[str, list[Path]]:
    """Run a linter over one temp file per source (in order); return its stdout and the paths."""
    with tempfile.TemporaryDirectory(prefix="coral-lint-") as tmp:
        paths = [Path(tmp) / f"candidate_{i}.py" for i in range(len(sources))]
        for path, source in zip(paths, sources, strict=True):
            path.write_bytes(source.encode("utf-8", "replace"))  # a lone surrogate becomes "?"
        proc = subprocess.run(  # fixed tool, our own temp files
            argv + [str(p) for p in paths], cwd=tmp, capture_output=True, text=True, check=False
        )
        if proc.returncode not in (0, 1) or not proc.stdout.strip():  # 1: bandit found issues
            raise LintFailed(f"{' '.join(argv[:3])} failed ({proc.returncode}): {proc.stderr.strip()[:500]}")
        return proc.stdout, paths


class LintFailed(RuntimeError):
    """A linter run ended without a report (crashed, or not installed)."""


def style_scores(sources: Sequence[str]) -> list[tuple[float, tuple[str, ...]]]:
    """ruff over all sources in one call; each file is linted on its own, so batching is exact.

    If the batch fails (ruff overflows its stack on a deeply nested expression), each file is
    linted alone and a file ruff cannot lint scores 0 with RUFF_FAILED as its violation.
    """
    if not sources:
        return []
    try:
        return _ruff(sources)
    except LintFailed:
        if len(sources) == 1:
            return [(0.0, (RUFF_FAILED,))]
        _ruff([""])  # ruff itself works (else this raises: an infrastructure fault, not a score)
        return [score for source in sources for score in style_scores([source])]


def _ruff(sources: Sequence[str]) -> list[tuple[float, tuple[str, ...]]]:
    argv = _tool("ruff") + ["check", "--no-cache", "--isolated", "--ignore-noqa", "--exit-zero"]
    argv += ["--select", RUFF_RULES, *RUFF_ARGS, "--output-format", "json"]
    out, paths = _lint_batch(sources, argv)
    found: dict[str, list[str]] = defaultdict(list)
    try:
        report = json.loads(out)
        for item in report:
            found[Path(item["filename"]).name].append(str(item.get("code") or "syntax"))
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise LintFailed(f"ruff's report is unreadable: {exc}"[:200]) from exc
    scores = []
    for path, source in zip(paths, sources, strict=True):
        codes = tuple(sorted(found[path.name]))
        scores.append((max(0.0, 1.0 - len(codes) / max(1, code_lines(source))), codes))
    return scores


def security_scores(sources: Sequence[str]) -> list[tuple[float, tuple[str, ...]]]:
    """bandit over all sources (`# nosec` ignored: the candidate does not judge), in this
    process: bandit's start-up (about a second) once per process instead of once per test job,
    which made it most of a test job's cost. Same tests and results as the `bandit` command."""
    if not sources:
        return []
    with tempfile.TemporaryDirectory(prefix="coral-bandit-") as tmp:
        paths = [Path(tmp) / f"candidate_{i}.py" for i in range(len(sources))]
        for path, source in zip(paths, sources, strict=True):
            path.write_bytes(source.encode("utf-8", "replace"))  # a lone surrogate becomes "?"
        found: dict[str, list[str]] = defaultdict(list)
        for name, test_id, severity in _bandit(paths):
            found[name].append(f"{test_id}:{severity}")
        for path, source in zip(paths, sources, strict=True):
            # Skipped files that compile: bandit crashed on them (a syntax error is syntax's to score).
            if path.name in found and any(i.endswith(":SKIPPED") for i in found[path.name]):
                found[path.name] = [i for i in found[path.name] if not i.endswith(":SKIPPED")]
                if syntax_score(source) == 1.0:
                    found[path.name].append("bandit-failed:UNANALYSED")
    scores = []
    for path in paths:
        issues = tuple(sorted(found[path.name]))
        scores.append((1.0 - min(1.0, bandit_weight(issues) / SECURITY_SCALE), issues))
    return scores


_bandit_lock = threading.Lock()  # bandit's manager keeps state of its own: one run at a time


def _bandit(paths: Sequence[Path]) -> list[tuple[str, str, str]]:
    """(file name, test id, severity) of every bandit issue in `paths`."""
    with _bandit_lock, warnings.catch_warnings():
        # bandit's plugin loader passes an argument stevedore deprecated: noise, not a finding.
        warnings.simplefilter("ignore", DeprecationWarning)
        from bandit.core import config as bandit_config  # heavy: only where candidates are scored
        from bandit.core import manager as bandit_manager

        conf = bandit_config.BanditConfig()
        mgr = bandit_manager.BanditManager(conf, "file", ignore_nosec=True,
                                           profile={"exclude": BANDIT_SKIPS.split(",")})
        mgr.discover_files([str(p) for p in paths])
        mgr.run_tests()
        issues = [(Path(i.fname).name, i.test_id, str(i.severity)) for i in mgr.get_issue_list()]
        return issues + [(Path(str(skipped[0])).name, "bandit", "SKIPPED") for skipped in mgr.skipped]


def bandit_weight(issues: Sequence[str]) -> float:
    """Sum of severity weights of bandit issues ("B602:HIGH"); other entries count nothing."""
    return sum(SEVERITY_WEIGHTS.get(i.split(":")[1], 1.0) for i in issues
               if ":" in i and not i.startswith("policy:"))


# --- per genome -----------------------------------------------------------------------------


def fixed_at_k(samples: int, fixed: int, k: int) -> float:
    """Chance that k of the samples, drawn without replacement, include a fixed one
    (Chen et al. 2021's unbiased pass@k; with samples == k: 1 if any is fixed)."""
    if samples - fixed < k:
        return 1.0
    return 1.0 - comb(samples - fixed, k) / comb(samples, k)


def aggregate(scores: Sequence[CandidateScore], k: int) -> GenomeObjectives:
    """Means over evaluation problems x samples (each problem weighs the same) and fixed@k.

    `scores` holds every sample of every evaluation problem; they are grouped by problem name.
    Each problem needs at least k samples.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    groups: dict[str, list[CandidateScore]] = defaultdict(list)
    for score in scores:
        groups[score.problem].append(score)
    if not groups:
        raise ValueError("no scores to aggregate")
    short = sorted(name for name, group in groups.items() if len(group) < k)
    if short:
        raise ValueError(f"fewer than k={k} samples for: {', '.join(short)}")
    means = {n: sum(sum(getattr(s, n) for s in g) / len(g) for g in groups.values()) / len(groups)
             for n in CANDIDATE_OBJECTIVES}
    at_k = sum(fixed_at_k(len(g), sum(s.fixed for s in g), k) for g in groups.values()) / len(groups)
    return GenomeObjectives(**means, fixed_at_k=at_k, k=k, problems=len(groups), candidates=len(scores))
