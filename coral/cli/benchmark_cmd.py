"""coral bench check ROOT [--json] [--jobs N] [--step-budget N]; coral bench split ROOT ...

`check` runs every reference fix and every buggy program of a benchmark through the sandboxed
runner. A sound benchmark has references that pass every case and buggy programs that fail at
least one; anything else exits 1 and names the problem. A malformed directory exits 2.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coral.config import SandboxConfig, load_config

# Each runner call waits on child processes, so threads overlap them; a few suffice.
DEFAULT_JOBS = max(2, min(8, os.cpu_count() or 1))


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="inspect and check a benchmark (QuixBugs layout)")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="ACTION")

    check = bench_sub.add_parser(
        "check", help="run every reference fix and buggy program against its tests"
    )
    check.add_argument("root", type=Path, help="benchmark directory")
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")
    check.add_argument("--jobs", type=positive_int, default=DEFAULT_JOBS,
                       help=f"problems checked at once (default {DEFAULT_JOBS})")
    check.add_argument("--budget-ceiling", type=_positive_float, default=None, metavar="SECONDS",
                       help="CPU-seconds a reference case may take, and the cap of every "
                            "candidate's per-case budget (default: the config's "
                            "sandbox.budget_ceiling)")
    check.add_argument("--config", type=Path, default=None,
                       help="take the sandbox limits from this config (default: the defaults "
                            "every run starts from)")
    check.add_argument("--model", default=None, metavar="M",
                       help="also report the problems whose reference or buggy body is in model "
                            "folder M's training manifest (contamination)")
    check.set_defaults(func=_check)

    split = bench_sub.add_parser("split", help="print the train/eval split")
    split.add_argument("root", type=Path, help="benchmark directory")
    split.add_argument("--split", type=Path, default=None,
                       help="split file (default: ROOT/split.json, else the derived split)")
    split.add_argument("--json", action="store_true", help="print JSON")
    split.set_defaults(func=_split)

    from coral.cli.benchmark_eval_cmd import register_actions

    register_actions(bench_sub, DEFAULT_JOBS, positive_int)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


@dataclass(frozen=True)
class ProblemCheck:
    name: str
    correct_passed: int
    correct_total: int
    buggy_passed: int
    buggy_total: int
    failing_reference_cases: list[str]  # "CASE_ID (reason)" of each case the reference fails
    unrecordable: str | None = None  # why its tests cannot be judged outside the box

    @property
    def problems(self) -> list[str]:
        """Why this problem makes the benchmark unsound (empty when sound)."""
        if self.unrecordable is not None:
            return [self.unrecordable]
        found = []
        if self.correct_total == 0:
            found.append("no test case ran")
        if self.failing_reference_cases:
            found.append("reference fails " + ", ".join(self.failing_reference_cases))
        if self.buggy_total > 0 and self.buggy_passed == self.buggy_total:
            found.append("buggy program passes every case")
        return found

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "correct": {"passed": self.correct_passed, "total": self.correct_total},
            "buggy": {"passed": self.buggy_passed, "total": self.buggy_total},
        }


def check_benchmark(
    root: Path, jobs: int = DEFAULT_JOBS, budget_ceiling: float | None = None,
    sandbox: SandboxConfig | None = None, progress: Callable[[int, int], None] | None = None,
) -> list[ProblemCheck]:
    """Reference and buggy results for every problem, in name order; `progress(done, total)`
    after each problem."""
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace

    from coral.benchmark.loader import load_benchmark

    problems = load_benchmark(root)  # a malformed directory fails here, before any run
    from coral.sandbox.runner import UNRECORDABLE, RunnerLimits, check_problem

    limits = RunnerLimits.from_config(sandbox or SandboxConfig())  # the limits a run uses
    if budget_ceiling is not None:
        limits = replace(limits, budget_ceiling=budget_ceiling)
    finished = itertools.count(1)

    def check(problem: Any) -> Any:
        result = check_problem(problem, limits)
        if progress is not None:
            progress(next(finished), len(problems))
        return result

    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="bench-check") as pool:
        runs = list(pool.map(check, problems))
    checks = []
    for problem, (correct, buggy) in zip(problems, runs, strict=True):
        failing = [f"{c.case_id} ({c.reason})" if c.reason else c.case_id
                   for c in correct.cases if not c.passed]
        checks.append(ProblemCheck(
            name=problem.name,
            correct_passed=sum(c.passed for c in correct.cases),
            correct_total=len(correct.cases),
            buggy_passed=sum(c.passed for c in buggy.cases),
            buggy_total=len(buggy.cases),
            failing_reference_cases=failing,
            unrecordable=correct.error if (correct.error or "").startswith(UNRECORDABLE) else None,
        ))
    return checks


def _ticker(verb: str, interval: float = 3.0) -> Callable[[int, int], None]:
    """'checked 12/40 problems' on stderr, at most every `interval` seconds, and the last one."""
    last = [0.0]
    lock = threading.Lock()

    def tick(done: int, total: int) -> None:
        with lock:
            now = time.monotonic()
            if done < total and now - last[0] < interval:
                return
            last[0] = now
            print(f"{verb} {done}/{total} problems", file=sys.stderr, flush=True)

    return tick


def _check(args: argparse.Namespace) -> int:
    sandbox = load_config(args.config).sandbox if args.config else None
    checks = check_benchmark(args.root, args.jobs, args.budget_ceiling, sandbox, progress=_ticker("checked"))
    unsound = [(c.name, why) for c in checks for why in c.problems]
    contamination = _contamination(args.root, args.model) if args.model else None
    if args.json:
        extra = {} if contamination is None else {
            "contaminated": contamination["contaminated"], "contamination": contamination}
        print(json.dumps({"problems": [c.as_dict() for c in checks], **extra}, indent=2))
    else:
        _print_table(checks)
        if contamination is not None:
            print(_contamination_line(contamination))
    for name, why in unsound:
        print(f"coral: unsound: {name}: {why}", file=sys.stderr if args.json else sys.stdout)
    return 1 if unsound else 0


def _contamination(root: Path, model: str) -> dict[str, Any]:
    from coral.benchmark.contamination import report
    from coral.benchmark.loader import load_benchmark

    return report(load_benchmark(root), model)


def _contamination_line(found: dict[str, Any]) -> str:
    if not found["manifest"]:
        return (f"contamination: unknown ({found['model']} has no training manifest, "
                "coral_training_manifest.json)")
    names = found["contaminated"]
    if not names:
        return f"contamination: none ({found['programs']} programs in the training manifest)"
    return (f"contamination: {len(names)} problem(s) whose reference or buggy body the model "
            f"trained on: {' '.join(names)}")


def _print_table(checks: list[ProblemCheck]) -> None:
    width = max([len("problem")] + [len(c.name) for c in checks])
    print(f"{'problem':<{width}}  {'reference':>9}  {'buggy':>9}  verdict")
    for c in checks:
        verdict = "ok" if not c.problems else "UNSOUND"
        reference = f"{c.correct_passed}/{c.correct_total}"
        buggy = f"{c.buggy_passed}/{c.buggy_total}"
        print(f"{c.name:<{width}}  {reference:>9}  {buggy:>9}  {verdict}")
    sound = sum(1 for c in checks if not c.problems)
    ref_passed = sum(c.correct_passed for c in checks)
    ref_total = sum(c.correct_total for c in checks)
    bug_passed = sum(c.buggy_passed for c in checks)
    bug_total = sum(c.buggy_total for c in checks)
    print(f"{len(checks)} problems: {sound} sound, {len(checks) - sound} unsound; "
          f"references pass {ref_passed}/{ref_total} cases, buggy programs {bug_passed}/{bug_total}")


def _split(args: argparse.Namespace) -> int:
    from coral.benchmark.split import load_split

    split = load_split(args.root, args.split)
    if args.json:
        print(json.dumps(split.as_dict(), indent=2))
    else:
        print(f"train ({len(split.train)}): {' '.join(split.train)}")
        print(f"eval ({len(split.eval)}): {' '.join(split.eval)}")
    return 0
