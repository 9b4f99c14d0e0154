"""Evaluator throughput vs plain pytest, on the bundled benchmark, in one run.

Candidates are every problem's buggy program and its reference fix. The evaluator side is
coral.sandbox.objectives.score_candidates: a sandbox per candidate running all its cases, ruff and
bandit once per batch, all five objectives; reference runs are recomputed every round (the
per-process cache is cleared) and no candidate result is ever reused. Each reference run is the
trusted half of its problem's verdicts (recorded expected operands) and calibrates budgets.
The pytest side runs `python -m pytest -q python_testcases/test_NAME.py` (buggy) and the same with `--correct`, one
problem at a time, in data/problems. Rounds alternate between the two so that both see the
same machine load; the medians are compared.

    python bench/evaluator.py [--rounds 3] [--workers N] [--record]

--record appends the result to bench/RESULTS.md. Target: evaluator >= 20x pytest.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from coral.benchmark.loader import load_benchmark
from coral.benchmark.problem import Problem
from coral.sandbox import objectives
from coral.sandbox.box import isolation_available
from coral.sandbox.runner import clear_reference_cache

REPO = Path(__file__).resolve().parents[1]

ROOT = REPO / "data" / "problems"


def evaluator_round(problems: list[Problem], workers: int) -> dict[str, float]:
    """Seconds for the buggy programs, then the reference fixes, each side one batch."""
    clear_reference_cache()  # a fresh process would pay for the references too
    times = {}
    for side in ("buggy", "correct"):
        items = [(p, p.buggy_source if side == "buggy" else p.correct_source) for p in problems]
        start = time.perf_counter()
        scores = objectives.score_candidates(items, workers=workers)
        times[side] = time.perf_counter() - start
        if side == "correct" and not all(s.fixed for s in scores):
            raise SystemExit(f"reference fixes failing in the evaluator: {[s.problem for s in scores if not s.fixed]}")
    return times


def pytest_round(problems: list[Problem]) -> dict[str, float]:
    """Seconds per side: one pytest process per problem and side, one at a time."""
    times = {"buggy": 0.0, "correct": 0.0}
    for problem in problems:
        for side, extra in (("buggy", []), ("correct", ["--correct"])):
            argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
            argv += [f"python_testcases/test_{problem.name}.py", *extra]
            start = time.perf_counter()
            proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
            times[side] += time.perf_counter() - start
            if extra and proc.returncode != 0:
                raise SystemExit(f"pytest --correct failed for {problem.name}:\n{proc.stdout[-2000:]}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--record", action="store_true", help="append the result to bench/RESULTS.md")
    args = parser.parse_args()

    problems = load_benchmark(ROOT)
    n = len(problems)
    print(f"{n} problems, {2 * n} candidates per round; isolation: {isolation_available()}")
    runs: dict[str, list[dict[str, float]]] = {"evaluator": [], "evaluator-1": [], "pytest": []}
    for r in range(args.rounds):
        for name, measure in (
            ("evaluator", lambda: evaluator_round(problems, args.workers)),
            ("evaluator-1", lambda: evaluator_round(problems, 1)),
            ("pytest", lambda: pytest_round(problems)),
        ):
            times = measure()
            runs[name].append(times)
            print(f"round {r + 1}: {name:12s} buggy {times['buggy']:6.1f} s, correct {times['correct']:6.1f} s")

    def rate(name: str, sides: tuple[str, ...]) -> float:
        return statistics.median(len(sides) * n / sum(t[s] for s in sides) for t in runs[name])

    both, ref = ("buggy", "correct"), ("correct",)
    ev, ev1, py = rate("evaluator", both), rate("evaluator-1", both), rate("pytest", both)
    ev_ref, py_ref = rate("evaluator", ref), rate("pytest", ref)
    lines = [
        f"evaluator, {args.workers} workers: {ev:.2f} candidates/s (median of {args.rounds} rounds)",
        f"evaluator, 1 worker: {ev1:.2f} candidates/s",
        f"pytest, one problem at a time: {py:.2f} candidates/s",
        f"ratio evaluator/pytest: {ev / py:.1f}x ({args.workers} workers), {ev1 / py:.1f}x (1 worker)",
        f"reference fixes only (no hanging programs, so no pytest case timeouts): evaluator {ev_ref:.2f}/s, "
        f"pytest {py_ref:.2f}/s, ratio {ev_ref / py_ref:.1f}x",
    ]
    print("\n".join(lines))
    if args.record:
        record(lines, args)


def record(lines: list[str], args: argparse.Namespace) -> None:
    date = subprocess.run(["date"], capture_output=True, text=True, check=False).stdout.strip()
    machine = (
        f"{os.cpu_count()} cores, no GPU, {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )
    command = f"python bench/evaluator.py --rounds {args.rounds} --workers {args.workers} --record"
    section = [f"\n## Evaluator throughput ({date})\n", f"- machine: {machine}", f"- command: `{command}`"]
    section += [f"- {line}" for line in lines]
    with open(REPO / "bench" / "RESULTS.md", "a", encoding="utf-8") as fh:
        fh.write("\n".join(section) + "\n")


if __name__ == "__main__":
    main()
