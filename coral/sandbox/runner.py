"""Run one candidate program against all of one problem's cases, in one sandbox.

The box runs coral/sandbox/harness.py, which gets the candidate, the case *inputs* and the
budgets on stdin and reports one line per case. Expected outputs of JSON cases never enter the
box: the harness sends back what the candidate returned and this module compares. Pytest-style
problems are judged in the box (the test file holds its own expectations).

A case that exhausts its step budget, or a crash in the middle of a case (segfault, os._exit),
ends that box; the case fails with the reason and a fresh box continues from the next case, so
one bad case never costs the others. A limit that is only a safety net (wall clock, CPU,
output size) ends the whole run instead: all cases not yet reported fail with its name.
"""

from __future__ import annotations

import importlib.util
import json
import marshal
import math
import secrets
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from coral.benchmark.problem import Problem
from coral.config import SandboxConfig
from coral.sandbox.box import SandboxLimits, SandboxResult, python_executable, run_sandboxed

STEP_BUDGET_REASON = "step budget exceeded"
# Killed by a safety net: what follows would depend on the machine's speed, so stop there.
_SAFETY_NETS = frozenset({"wall_timeout", "cpu_limit", "output_limit", "supervisor_lost"})
REL_TOL, ABS_TOL = 1e-6, 1e-9  # float comparison of JSON outputs


_DEFAULTS = SandboxConfig()  # the one definition of the limits: the config's sandbox section


@dataclass(frozen=True)
class RunnerLimits:
    """The sandbox limits of one candidate run. Defaults are SandboxConfig's (docs/config.md),
    so `coral bench check` and a run with the default config use the same limits."""

    step_budget: int = _DEFAULTS.step_budget  # executed lines per case: the deterministic stop
    import_step_budget: int = _DEFAULTS.step_budget  # executed lines while importing the candidate
    wall_seconds: float = _DEFAULTS.wall_seconds  # per box, safety net only
    cpu_seconds: float = _DEFAULTS.cpu_seconds  # per box, safety net only
    memory_mb: int = _DEFAULTS.memory_mb
    max_processes: int = _DEFAULTS.max_processes  # processes + threads
    max_file_mb: int = _DEFAULTS.max_file_mb
    max_result_bytes: int = _DEFAULTS.max_output_bytes  # one case's encoded return value

    @classmethod
    def from_config(cls, sandbox: SandboxConfig) -> RunnerLimits:
        """A config's sandbox section (one step budget for import and for each case)."""
        return cls(
            step_budget=sandbox.step_budget, import_step_budget=sandbox.step_budget,
            wall_seconds=sandbox.wall_seconds, cpu_seconds=sandbox.cpu_seconds,
            memory_mb=sandbox.memory_mb, max_processes=sandbox.max_processes,
            max_file_mb=sandbox.max_file_mb, max_result_bytes=sandbox.max_output_bytes,
        )


@dataclass(frozen=True)
class CaseResult:
    case_id: str
    passed: bool
    reason: str | None  # why it failed; None when passed
    steps: int  # executed lines: the case's deterministic runtime cost


@dataclass(frozen=True)
class CandidateRun:
    problem: str
    cases: tuple[CaseResult, ...]
    syntax_ok: bool
    error: str | None  # one line, for whole-program failures (syntax, import, collection)
    boxes: int = 1  # sandboxes started (more than one only after crashes or step stops)
    wall_seconds: float = field(default=0.0, compare=False)  # shown, never selected on

    @property
    def total(self) -> int:
        return len(self.cases)

    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.cases)

    @property
    def fixed(self) -> bool:
        return self.total > 0 and self.passed == self.total

    @property
    def steps(self) -> int:
        return sum(c.steps for c in self.cases)


def run_candidate(problem: Problem, candidate_source: str, limits: RunnerLimits | None = None) -> CandidateRun:
    """All of `problem`'s cases against `candidate_source` (which must define problem.name)."""
    return _Session(problem, candidate_source, limits or RunnerLimits()).run()


def check_problem(problem: Problem, limits: RunnerLimits | None = None) -> tuple[CandidateRun, CandidateRun]:
    """(reference fix, buggy program) runs: a sound problem fixes the first, not the second."""
    return (
        run_candidate(problem, problem.correct_source, limits),
        run_candidate(problem, problem.buggy_source, limits),
    )


def outputs_match(actual: Any, expected: Any) -> bool:
    """Python's == on decoded JSON values, except that floats compare with a tolerance."""
    if isinstance(actual, (int, float)) and isinstance(expected, (int, float)):
        if isinstance(actual, float) or isinstance(expected, float):
            return math.isclose(actual, expected, rel_tol=REL_TOL, abs_tol=ABS_TOL)
        return actual == expected
    if isinstance(actual, list) and isinstance(expected, (list, tuple)):
        return len(actual) == len(expected) and all(outputs_match(a, e) for a, e in zip(actual, expected, strict=True))
    if isinstance(actual, dict) and isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(outputs_match(actual[k], expected[k]) for k in expected)
    return type(actual) is type(expected) and actual == expected


@cache
def _harness_pyc() -> bytes:
    """harness.py compiled once: the box runs the .pyc, skipping a compile per candidate.

    The box runs the interpreter this process runs on (python_executable), so the magic
    number matches; the 12 header bytes after it are not checked for a script.
    """
    source = Path(__file__).with_name("harness.py").read_text(encoding="utf-8")
    code = compile(source, "harness.py", "exec", dont_inherit=True)
    return importlib.util.MAGIC_NUMBER + bytes(12) + marshal.dumps(code)


def crash_reason(res: SandboxResult) -> str:
    """One line for a box that ended without finishing."""
    if res.killed_reason is not None:
        if res.killed_reason.startswith("signal:"):
            return f"crashed: signal {res.killed_reason.split(':', 1)[1]}"
        return f"killed: {res.killed_reason}"
    return f"crashed: exit code {res.returncode}"


class _Session:
    """One candidate on one problem: as many boxes as crashes require, usually one."""

    def __init__(self, problem: Problem, source: str, limits: RunnerLimits) -> None:
        self.problem, self.source, self.limits = problem, source, limits
        self.json = problem.json_cases
        self.ids: list[str] | None = [f"case-{c.index}" for c in self.json] if self.json is not None else None
        self.results: dict[int, CaseResult] = {}
        self.syntax_ok: bool | None = None  # unknown until the box reports its compile
        self.error: str | None = None
        self.boxes, self.wall = 0, 0.0

    def run(self) -> CandidateRun:
        start = 0
        while self.ids is None or start < len(self.ids):
            res, messages = self._box(start)
            reached_cases, done, stopped = self._absorb(messages, start)
            if self.ids is None:  # the trusted test file never finished collecting
                self.ids = ["<collection>"]
                self.error = self.error or f"collecting tests: {crash_reason(res)}"
            if self.error is not None or done:
                break
            if not reached_cases:
                self.error = f"crashed while importing: {crash_reason(res)}"
                break
            resume = self._next_index(start)
            if stopped and resume > start:  # the last case ran out of steps: go on after it
                start = resume
            elif resume < len(self.ids):  # the case in progress took the box down
                self._fail(resume, crash_reason(res))
                start = resume + 1
            else:
                start = resume
            if res.killed_reason in _SAFETY_NETS:
                self.error = f"not run after {crash_reason(res)}"
                break
        return self._finish()

    def _box(self, start: int) -> tuple[SandboxResult, list[dict[str, Any]]]:
        nonce = secrets.token_hex(16)
        p, lim = self.problem, self.limits
        job = {
            "nonce": nonce,
            "name": p.name,
            "source": self.source,
            "mode": "json" if self.json is not None else "pytest",
            "inputs": [(i, c.args) for i, c in enumerate(self.json or ()) if i >= start],
            "pytest_source": p.pytest_source or "",
            "support_modules": [n[:-3] for n in p.support_files if n.endswith(".py")],
            "start": start,
            "step_budget": lim.step_budget,
            "import_budget": lim.import_step_budget,
            "max_result_bytes": lim.max_result_bytes,
        }
        files = {name: text.encode() for name, text in p.support_files.items()}
        files["harness.pyc"] = _harness_pyc()
        n_cases = len(self.json) if self.json is not None else 256
        box_limits = SandboxLimits(
            cpu_seconds=lim.cpu_seconds,
            wall_seconds=lim.wall_seconds,
            memory_mb=lim.memory_mb,
            max_processes=lim.max_processes,
            max_file_mb=lim.max_file_mb,
            max_output_bytes=(n_cases + 16) * (lim.max_result_bytes + 256),
        )
        argv = [python_executable(), "-S", "-B", "harness.pyc"]
        res = run_sandboxed(argv, files, box_limits, marshal.dumps(job))
        self.boxes += 1
        self.wall += res.wall_seconds
        return res, _messages(res.stdout, nonce.encode())

    def _absorb(self, messages: list[dict[str, Any]], start: int) -> tuple[bool, bool, bool]:
        """Take in one box's reports: (reached the cases, finished, stopped on the budget)."""
        reached = done = stopped = False
        for msg in messages:
            kind = msg.get("t")
            if kind == "collected" and self.ids is None:
                cases = msg.get("cases")
                if isinstance(cases, list) and all(isinstance(c, str) for c in cases):
                    self.ids = cases
                else:
                    self.ids = ["<collection>"]
                    self.error = _line(msg.get("error")) or "collecting tests failed"
            elif kind == "compiled" and self.syntax_ok is None:
                self.syntax_ok = msg.get("ok") is True
                if not self.syntax_ok:
                    self.error = f"syntax error: {_line(msg.get('error'))}"
            elif kind == "imported":
                if msg.get("ok") is True:
                    reached = True
                else:
                    self.error = _line(msg.get("error")) or "import failed"
            elif kind == "case" and reached:
                stopped = self._case(msg, start) or stopped
            elif kind == "done" and reached:
                done = True
        return reached, done, stopped

    def _case(self, msg: dict[str, Any], start: int) -> bool:
        i, steps = msg.get("i"), msg.get("steps")
        assert self.ids is not None  # ids are known before any case runs
        if not (type(i) is int and start <= i < len(self.ids)) or i in self.results:
            return False
        steps = steps if type(steps) is int and steps >= 0 else 0
        if "error" in msg:
            self._fail(i, _line(msg["error"]) or "failed", steps)
        elif self.json is not None:
            if "out" not in msg:
                return False
            ok = outputs_match(msg["out"], self.json[i].expected)
            self.results[i] = CaseResult(self.ids[i], ok, None if ok else "wrong answer", steps)
        else:
            ok = msg.get("passed") is True
            reason = None if ok else _line(msg.get("reason")) or "failed"
            self.results[i] = CaseResult(self.ids[i], ok, reason, steps)
        return msg.get("stop") is True

    def _next_index(self, start: int) -> int:
        i = start
        while i in self.results:
            i += 1
        return i

    def _fail(self, i: int, reason: str, steps: int = 0) -> None:
        assert self.ids is not None
        self.results.setdefault(i, CaseResult(self.ids[i], False, reason, steps))

    def _finish(self) -> CandidateRun:
        assert self.ids is not None
        for i in range(len(self.ids)):
            self._fail(i, self.error or "not reported")
        cases = tuple(self.results[i] for i in range(len(self.ids)))
        # A box that died before compiling has not shown that the program compiles.
        syntax_ok = self.syntax_ok is True
        return CandidateRun(self.problem.name, cases, syntax_ok, self.error, self.boxes, self.wall)


def _messages(stdout: bytes, nonce: bytes) -> list[dict[str, Any]]:
    """The harness's reports; anything else on the stream (or malformed) is ignored."""
    out = []
    prefix = nonce + b" "
    for raw in stdout.split(b"\n"):
        if raw.startswith(prefix):
            try:
                msg = json.loads(raw[len(prefix) :])
            except ValueError:
                continue
            if isinstance(msg, dict):
                out.append(msg)
    return out


def _line(text: object) -> str:
    if not isinstance(text, str):
        return ""
    lines = text.strip().splitlines()
    return lines[0][:200] if lines else ""
