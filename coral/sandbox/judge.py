"""Whether a program fails a problem's tests, run in the sandbox (the judge of `coral bench mutate`)."""

from __future__ import annotations

import threading
from contextlib import nullcontext

from coral.benchmark.problem import Problem
from coral.errors import BenchmarkError
from coral.sandbox.runner import RunnerLimits, run_candidate


class SandboxJudge:
    """judge(family, instance): (cases passed, cases) of the instance's buggy program.

    Each family's reference runs once first and must pass every case: otherwise the benchmark
    is unsound and a failing mutant would say nothing about its bug. The runner calibrates each
    candidate's budgets from the instance's own reference run (coral.sandbox.runner), so a
    mutant that loops stops at a multiple of what the fix costs.
    """

    def __init__(self, limits: RunnerLimits | None = None) -> None:
        self.limits = limits or RunnerLimits()
        self._checked: set[str] = set()
        self._lock = threading.Lock()
        self._pytest_lock = threading.Lock()
        self.runs = 0

    def __call__(self, family: Problem, instance: Problem) -> tuple[int, int]:
        self.check_family(family)
        with self._pytest_lock if not instance.uses_json_cases else nullcontext():
            # Splitting pytest-style test files raced across threads (record._copy_with_ids):
            # those problems are judged one at a time; JSON-case problems in parallel.
            run = run_candidate(instance, instance.buggy_source, self.limits)
        with self._lock:
            self.runs += 1
        return run.passed, run.total

    def check_family(self, family: Problem) -> None:
        with self._lock:
            if family.name in self._checked:
                return
        with self._pytest_lock if not family.uses_json_cases else nullcontext():
            run = run_candidate(family, family.correct_source, self.limits)
        if not run.fixed:
            failing = next((c for c in run.cases if not c.passed), None)
            why = f"{failing.case_id} ({failing.reason})" if failing else run.error or "no case ran"
            raise BenchmarkError(f"{family.name}: the reference fails its own tests: {why}")
        with self._lock:
            self._checked.add(family.name)
