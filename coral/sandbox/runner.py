"""Run one candidate program against all of one problem's cases, and judge it outside the box.

The box runs coral/sandbox/harness.py, which reports *values* only: what the candidate
returned for each JSON case, or what each assert of a pytest-style test compared (the test is
split by coral.sandbox.record so that expected values stay out of the candidate's box). This
module compares them: JSON outputs with the case's expected value, recorded operands with
what the reference fix's own box recorded for the same test. The cost of every case is
counted by the kernel outside the box (coral.sandbox.box.Meter); the box can only move cost
between its own cases, never lower the total.

Every problem's reference fix runs first (once per process and problem content): its run
says whether the problem is sound, gives the expected operands of pytest-style tests, and
calibrates the per-case budget (budget_factor x its cost, within [floor, ceiling]).

A case that overruns its budget, or a crash in the middle of a case (segfault, os._exit),
ends that box; the case fails with the reason and a fresh box continues from the next case, so
one bad case never costs the others. A limit that is only a safety net (wall clock, CPU,
output size) ends the whole run instead: all cases not yet reported fail with its name.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import marshal
import math
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any, Generic, TypeVar

from coral.benchmark.problem import Problem
from coral.config import SandboxConfig
from coral.sandbox import record, verdicts
from coral.sandbox.box import (
    METER_COUNTERS,
    METER_RATES,
    Meter,
    SandboxLimits,
    SandboxResult,
    python_executable,
    run_sandboxed,
)

BUDGET_REASON = "budget exceeded"
# Killed by a safety net: what follows would depend on the machine's speed, so stop there.
_SAFETY_NETS = frozenset({"wall_timeout", "cpu_limit", "output_limit", "supervisor_lost"})
REL_TOL, ABS_TOL = 1e-6, 1e-9  # float comparison of JSON outputs (problems without a test file)
UNRECORDABLE = "tests cannot be recorded"

_DEFAULTS = SandboxConfig()  # the one definition of the limits: the config's sandbox section


@dataclass(frozen=True)
class RunnerLimits:
    """The sandbox limits of one candidate run. Defaults are SandboxConfig's (docs/config.md),
    so `coral bench check` and a run with the default config use the same limits."""

    budget_factor: float = _DEFAULTS.budget_factor  # per-case budget: this x the reference's cost
    budget_floor: float = _DEFAULTS.budget_floor  # CPU-seconds
    budget_ceiling: float = _DEFAULTS.budget_ceiling  # CPU-seconds; the reference's own budget
    wall_seconds: float = _DEFAULTS.wall_seconds  # per box, safety net only (plus the budgets)
    cpu_seconds: float = _DEFAULTS.cpu_seconds  # per box, safety net only (plus the budgets)
    memory_mb: int = _DEFAULTS.memory_mb
    max_processes: int = _DEFAULTS.max_processes  # processes + threads
    max_file_mb: int = _DEFAULTS.max_file_mb
    max_result_bytes: int = _DEFAULTS.max_output_bytes  # one case's encoded return value
    meter: str = _DEFAULTS.meter  # METER_COUNTERS key: the counters a box may use

    @classmethod
    def from_config(cls, sandbox: SandboxConfig) -> RunnerLimits:
        return cls(
            budget_factor=sandbox.budget_factor, budget_floor=sandbox.budget_floor,
            budget_ceiling=sandbox.budget_ceiling,
            wall_seconds=sandbox.wall_seconds, cpu_seconds=sandbox.cpu_seconds,
            memory_mb=sandbox.memory_mb, max_processes=sandbox.max_processes,
            max_file_mb=sandbox.max_file_mb, max_result_bytes=sandbox.max_output_bytes,
            meter=sandbox.meter,
        )


@dataclass(frozen=True)
class CaseResult:
    case_id: str
    passed: bool
    reason: str | None  # why it failed; None when passed
    cost: int  # counted work of this case (meter units; the box can move it between its cases)


@dataclass(frozen=True)
class CandidateRun:
    problem: str
    cases: tuple[CaseResult, ...]
    syntax_ok: bool
    error: str | None  # one line, for whole-program failures (syntax, import, collection)
    boxes: int = 1  # sandboxes started (more than one only after crashes or budget stops)
    wall_seconds: float = field(default=0.0, compare=False)  # shown, never selected on
    # Counted work from just before the candidate's import to the end of each box, summed:
    # what the runtime objective compares. Meter units: instructions, or CPU nanoseconds.
    cost: int = field(default=0, compare=False)
    # Which meter counted `cost` (METER_RATES); None when no box ran.
    meter: str | None = field(default=None, compare=False)

    @property
    def total(self) -> int:
        return len(self.cases)

    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.cases)

    @property
    def fixed(self) -> bool:
        return self.total > 0 and self.passed == self.total


@dataclass(frozen=True)
class Reference:
    """What the reference fix's run tells the trusted side about a problem."""

    run: CandidateRun  # its verdicts: a sound problem's reference passes every case
    ids: tuple[str, ...]  # every collected test (pytest-style) or case, by index
    recording: record.Recording | None  # pytest-style: the split test (None: JSON cases)
    items: tuple[int, ...]  # pytest-style: indices of the collected tests that are cases
    records: dict[int, list[tuple[int, list[Any]]]]  # item -> decoded (site, operands)
    costs: dict[int, int]  # cost per label (-1: compile and import)
    meter: str | None


def problem_key(problem: Problem) -> str:
    """Content hash of everything that decides the reference run (not the problem's name)."""
    cases = None if problem.json_cases is None else [(c.args, c.expected, c.bare) for c in problem.json_cases]
    content = [problem.name, problem.correct_source, cases, problem.pytest_source, problem.support_files]
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=repr).encode()).hexdigest()


def reference_limits(limits: RunnerLimits) -> RunnerLimits:
    """The limits a reference run depends on: all but those that only shape the candidates'
    budgets (budget_factor, budget_floor; the reference runs under budget_ceiling)."""
    return replace(limits, budget_factor=_DEFAULTS.budget_factor, budget_floor=_DEFAULTS.budget_floor)


K = TypeVar("K")
V = TypeVar("V")


class OncePerKey(Generic[K, V]):
    """Values computed once per process and key, even when threads ask together: one computes
    under the key's own lock, the others wait for its value (other keys go on meanwhile). For
    properties of a problem (its reference's run, its buggy program's run), never a candidate's
    result."""

    def __init__(self) -> None:
        self._values: dict[K, V] = {}
        self._locks: dict[K, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: K, compute: Callable[[], V]) -> V:
        with self._guard:
            if key in self._values:
                return self._values[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._guard:
                if key in self._values:
                    return self._values[key]
            value = compute()
            with self._guard:
                self._values[key] = value
            return value

    def clear(self) -> None:
        with self._guard:
            self._values.clear()


_references: OncePerKey[tuple[str, RunnerLimits], Reference] = OncePerKey()


def clear_reference_cache() -> None:
    _references.clear()


def reference(problem: Problem, limits: RunnerLimits | None = None) -> Reference:
    """The reference fix's run, once per process, problem content and the limits it ran under
    (reference_limits: every limit that can change its verdict or its cost).

    This caches the *reference* (a property of the problem), never a candidate's result.
    """
    limits = limits or RunnerLimits()
    return _references.get((problem_key(problem), reference_limits(limits)),
                           lambda: _run_reference(problem, limits))


def run_candidate(problem: Problem, candidate_source: str, limits: RunnerLimits | None = None) -> CandidateRun:
    """All of `problem`'s cases against `candidate_source` (which must define problem.name)."""
    limits = limits or RunnerLimits()
    ref = reference(problem, limits)
    if problem.pytest_source is not None and ref.recording is None:
        return _unrecordable(problem, ref.run.error or UNRECORDABLE)
    return _Session(problem, candidate_source, limits, ref).run()


def check_problem(problem: Problem, limits: RunnerLimits | None = None) -> tuple[CandidateRun, CandidateRun]:
    """(reference fix, buggy program) runs: a sound problem fixes the first, not the second.

    The reference's verdicts are its own run's *and* its run as a candidate (judged as every
    candidate is, against its own recorded operands): a case passes only if both pass, so a test
    shape the judge gets wrong (an expected value the candidate's box cannot see, a tolerance it
    cannot evaluate) makes the problem unsound before any run, with the reason.
    """
    ref = reference(problem, limits)
    as_candidate = run_candidate(problem, problem.correct_source, limits)
    return _both(ref.run, as_candidate), run_candidate(problem, problem.buggy_source, limits)


def _both(own: CandidateRun, as_candidate: CandidateRun) -> CandidateRun:
    """The reference's own run, each case failed where its run as a candidate failed it."""
    judged = {c.case_id: c for c in as_candidate.cases}
    cases = []
    for case in own.cases:
        other = judged.get(case.case_id)
        if case.passed and (other is None or not other.passed):
            why = "not run" if other is None else other.reason or "failed"
            case = CaseResult(case.case_id, False, f"as a candidate: {why}", case.cost)
        cases.append(case)
    return replace(own, cases=tuple(cases))


def case_budgets(ref: Reference, limits: RunnerLimits) -> Meter:
    """Per-case budgets in CPU-seconds: budget_factor x the reference's cost of the case."""
    rate = METER_RATES.get(ref.meter or "", 1e9)

    def budget(cost: int) -> float:
        return min(limits.budget_ceiling, max(limits.budget_floor, limits.budget_factor * cost / rate))

    budgets = {label: budget(cost) for label, cost in ref.costs.items()}
    return Meter(budgets, limits.budget_floor if budgets else limits.budget_ceiling, 2 + len(budgets),
                 METER_COUNTERS[limits.meter])


def outputs_match(actual: Any, expected: Any) -> bool:
    """JSON cases of problems without a test file: Python's == on JSON values (tuples as
    lists, dict subclasses as dicts), except that floats compare with a tolerance."""
    if isinstance(actual, (int, float)) and isinstance(expected, (int, float)):
        if isinstance(actual, float) or isinstance(expected, float):
            try:
                return math.isclose(actual, expected, rel_tol=REL_TOL, abs_tol=ABS_TOL)
            except OverflowError:  # an int past float range: no float is close to it
                return False
        return actual == expected
    if isinstance(actual, (list, tuple)) and isinstance(expected, (list, tuple)):
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


def _unrecordable(problem: Problem, reason: str) -> CandidateRun:
    return CandidateRun(problem.name, (CaseResult("<tests>", False, reason, 0),), False, reason, 0)


def _run_reference(problem: Problem, limits: RunnerLimits) -> Reference:
    recording = None
    if problem.pytest_source is not None:
        try:
            recording = record.split_tests(problem.pytest_source, problem.name)
        except (record.Unrecordable, SyntaxError) as exc:
            error = f"{UNRECORDABLE}: {exc}"
            return Reference(_unrecordable(problem, error), ("<tests>",), None, (), {}, {}, None)
    ceiling = Meter({}, limits.budget_ceiling, 1 << 20, METER_COUNTERS[limits.meter])
    session = _Session(problem, problem.correct_source, limits, None, recording=recording, meter=ceiling)
    run = session.run()
    items = tuple(i for i in session.order if i not in session.skipped)
    ids = tuple(session.ids or ())
    return Reference(run, ids, recording, items, session.ref_records, session.label_costs, run.meter)


class _Session:
    """One program on one problem: as many boxes as crashes require, usually one.

    With `ref` None this is the reference's own run (full test source, real JSON data); it
    keeps the operands its asserts recorded and which collected tests skipped.
    """

    def __init__(
        self, problem: Problem, source: str, limits: RunnerLimits, ref: Reference | None,
        recording: record.Recording | None = None, meter: Meter | None = None,
    ) -> None:
        self.problem, self.source, self.limits, self.ref = problem, source, limits, ref
        self.recording = recording if ref is None else ref.recording
        self.mode = "json" if problem.pytest_source is None else "pytest"
        # QuixBugs' usual JSON test only calls the function on each input and compares: the
        # candidate's box makes that call directly (no test file, no JSON loader to import)
        # and the assert is judged as the test's, against the reference box's operand.
        cases = problem.json_cases
        self.call_site = None
        if (ref is not None and self.recording is not None and self.recording.call_site is not None
                and cases is not None and not any(c.bare for c in cases) and len(ref.ids) == len(cases)):
            self.call_site = self.recording.call_site
        # The reference's own box for the same tests: the call plus the test's expected operand.
        self.reference_call = (ref is None and self.recording is not None and self.recording.call_expected is not None
                               and cases is not None and not any(c.bare for c in cases))
        if meter is None:
            if ref is None:
                raise ValueError("the reference's own session needs its meter")
            meter = case_budgets(ref, limits)
        self.meter = meter
        self.ids: list[str] | None = None
        self.order: list[int] = []  # the case indices (collected tests) in run order
        if self.mode == "json":
            assert problem.json_cases is not None
            self.order = list(range(len(problem.json_cases)))
            self.ids = [f"case-{i}" for i in self.order]
        elif ref is not None:
            self.order = list(ref.items)
            self.ids = list(ref.ids)
        self.results: dict[int, CaseResult] = {}
        self.costs: dict[int, int] = {}
        self.label_costs: dict[int, int] = {}
        self.ref_records: dict[int, list[tuple[int, list[Any]]]] = {}
        self.skipped: set[int] = set()
        self.syntax_ok: bool | None = None  # unknown until the box reports its compile
        self.error: str | None = None
        self.boxes, self.wall, self.total_cost = 0, 0.0, 0
        self.meter_kind: str | None = None
        # A candidate's wall clock is one budget across all its boxes (set by its first box):
        # crashing in every case must not restart the clock (sleep-then-crash took 5x as long).
        self.wall_budget: float | None = None

    def run(self) -> CandidateRun:
        pos = 0
        while self.ids is None or pos < len(self.order):
            todo = self.order[pos:]
            if self.wall_budget is not None and self.wall >= self.wall_budget:
                self.error = "not run after killed: wall_timeout"
                break
            res, messages = self._box(todo)
            reached, done = self._absorb(messages)
            self._count(res)
            if self.ids is None:  # the trusted test file never finished collecting
                self.ids, self.order = ["<collection>"], [0]
                self.error = self.error or f"collecting tests: {crash_reason(res)}"
            if self.error is not None or done:
                break
            if not reached:
                if res.over_budget == -1:
                    self.error = f"{BUDGET_REASON} while importing"
                else:
                    self.error = f"crashed while importing: {crash_reason(res)}"
                break
            pos = self._next(pos)
            if pos >= len(self.order):
                break
            current = self.order[pos]
            if res.over_budget is not None and res.over_budget == current:
                self._fail(current, BUDGET_REASON)
            else:  # the case in progress took the box down
                self._fail(current, crash_reason(res))
            pos += 1
            if res.killed_reason in _SAFETY_NETS:
                self.error = f"not run after {crash_reason(res)}"
                break
        return self._finish()

    def _next(self, pos: int) -> int:
        while pos < len(self.order) and self.order[pos] in self.results:
            pos += 1
        return pos

    def _box(self, todo: list[int]) -> tuple[SandboxResult, list[dict[str, Any]]]:
        nonce = secrets.token_hex(16)
        p, lim, rec = self.problem, self.limits, self.recording
        cases = p.json_cases or ()
        reference_side = self.ref is None
        job = {
            "nonce": nonce,
            "name": p.name,
            "source": self.source,
            "mode": "json" if self.call_site is not None or self.reference_call else self.mode,
            "inputs": [(i, cases[i].args) for i in todo]
            if self.mode == "json" or self.call_site is not None else
            [(i, cases[i].args, cases[i].expected) for i in (todo if self.ids is not None
             else range(len(cases)))] if self.reference_call else [],
            "call": None if not self.reference_call or rec is None else {
                "site": rec.call_site, "test": rec.call_test,
                "args": list(rec.call_args), "expected": rec.call_expected,
            },
            "lists": self.call_site is None,  # JSON cases compare a generator's items; a test does not
            "pytest_source": "" if self.recording is None else (
                self.recording.reference_source if reference_side else self.recording.candidate_source),
            "support_modules": [Path(n).stem for n in p.support_files if n.endswith(".py")],
            # The reference's first box collects; every box after that knows the cases.
            "items": todo if self.ids is not None else None,
            "max_result_bytes": lim.max_result_bytes,
        }
        files = {f"python_testcases/{name}": text.encode() for name, text in p.support_files.items()}
        if p.json_cases is not None and self.mode == "pytest":
            # The test's own loader reads this. Only the reference's box sees expected values.
            lines = [json.dumps([c.args[0] if c.bare else c.args, c.expected if reference_side else None])
                     for c in p.json_cases]
            files[f"json_testcases/{p.name}.json"] = ("\n".join(lines) + "\n").encode()
        files["harness.pyc"] = _harness_pyc()
        n_cases = len(todo) if self.ids is not None else 256
        budget = sum(self.meter.budgets.get(i, self.meter.default) for i in todo) + self.meter.default
        wall = lim.wall_seconds + 2 * budget
        if self.ref is not None:  # a candidate: what is left of its one wall budget
            if self.wall_budget is None:
                self.wall_budget = wall
            wall = self.wall_budget - self.wall
        box_limits = SandboxLimits(
            cpu_seconds=lim.cpu_seconds + budget,
            wall_seconds=wall,
            memory_mb=lim.memory_mb,
            max_processes=lim.max_processes,
            max_file_mb=lim.max_file_mb,
            max_output_bytes=(n_cases + 16) * (lim.max_result_bytes + 256),
        )
        argv = [python_executable(), "-S", "-B", "harness.pyc"]
        res = run_sandboxed(argv, files, box_limits, marshal.dumps(job), self.meter)
        self.boxes += 1
        self.wall += res.wall_seconds
        return res, _messages(res.stdout, nonce.encode())

    def _count(self, res: SandboxResult) -> None:
        """Costs from the supervisor's counts: per label between marks, and the box's total."""
        self.meter_kind = self.meter_kind or res.meter or "cpu-time"
        marks, end = list(res.marks), res.meter_end
        if res.meter is None or end is None:
            self.total_cost += int(res.cpu_seconds * 1e9)  # no counter: the kernel's CPU time
            return
        if not marks:
            return
        self.total_cost += end - marks[0][1]
        for (label, start), (_, stop) in zip(marks, marks[1:] + [(None, end)], strict=True):
            self.label_costs[label] = self.label_costs.get(label, 0) + stop - start
            if label >= 0:
                self.costs[label] = self.costs.get(label, 0) + stop - start

    def _absorb(self, messages: list[dict[str, Any]]) -> tuple[bool, bool]:
        """Take in one box's reports: (reached the cases, finished)."""
        reached = done = False
        for msg in messages:
            kind = msg.get("t")
            if kind == "collected" and "error" in msg:  # the trusted test file is broken
                self.error = self.error or _line(msg.get("error")) or "collecting tests failed"
            elif kind == "collected" and self.ids is None and self.ref is None:
                ids = msg.get("ids")
                if isinstance(ids, list) and all(isinstance(c, str) for c in ids):
                    self.ids, self.order = ids, list(range(len(ids)))
                else:
                    self.error = "collecting tests failed"
            elif kind == "compiled" and self.syntax_ok is None:
                self.syntax_ok = msg.get("ok") is True
                if not self.syntax_ok:
                    self.error = f"syntax error: {_line(msg.get('error'))}"
            elif kind == "imported":
                if msg.get("ok") is True:
                    reached = True
                else:
                    self.error = _line(msg.get("error")) or "import failed"
            elif kind in ("case", "item") and reached:
                i = msg.get("i")
                if type(i) is int and i in self.order and i not in self.results and i not in self.skipped:
                    self._judge(i, msg)
            elif kind == "done" and reached:
                done = True
        return reached, done

    def _judge(self, i: int, msg: dict[str, Any]) -> None:
        """Judge one reported case. Total: whatever the report holds (a huge int where a float
        is expected, NaN, deep nesting), the case gets a verdict and nothing escapes."""
        try:
            self._judge_report(i, msg)
        except Exception as exc:  # any candidate data is a failed case, never a crash of the run
            self._fail(i, f"could not be judged: {type(exc).__name__}")

    def _judge_report(self, i: int, msg: dict[str, Any]) -> None:
        rec, ref = self.recording, self.ref
        if self.call_site is not None and rec is not None and ref is not None:
            if "error" in msg:
                self._fail(i, _line(msg["error"]) or "failed")
            elif "out" in msg:
                mine = [(self.call_site, [verdicts.from_candidate(verdicts.decode(msg["out"]))])]
                why = _verdict(rec, ref.records.get(i, []), mine)
                self._set(i, why is None, why)
            return
        if self.mode == "json":
            if "error" in msg:
                self._fail(i, _line(msg["error"]) or "failed")
            elif "out" in msg:
                expected = (self.problem.json_cases or ())[i].expected
                try:
                    out = _plain(verdicts.decode(msg["out"]))
                except _BadValue as bad:
                    self._fail(i, f"returned {bad.args[0]}")
                    return
                ok = outputs_match(out, expected)
                self._set(i, ok, None if ok else "wrong answer")
            return
        end, records = msg.get("end"), msg.get("rec")
        if not isinstance(records, list):
            records = []
        decoded = [(r[0], [verdicts.decode(v) for v in r[1]]) for r in records
                   if isinstance(r, list) and len(r) == 2 and type(r[0]) is int and isinstance(r[1], list)]
        if end == "skip" and self.ref is None:
            self.skipped.add(i)
            return
        if end != "ok":
            self._fail(i, "skipped at run time" if end == "skip" else _line(msg.get("error")) or "failed")
            return
        if rec is None:
            self._fail(i, "unreadable record")
            return
        if ref is None:
            self.ref_records[i] = decoded
            why = _verdict(rec, decoded, None)
        else:
            why = _verdict(rec, ref.records.get(i, []), decoded)
        self._set(i, why is None, why)

    def _set(self, i: int, passed: bool, reason: str | None) -> None:
        self.results.setdefault(i, CaseResult(self._id(i), passed, reason and utf8(reason), 0))

    def _fail(self, i: int, reason: str) -> None:
        self._set(i, False, reason)

    def _id(self, i: int) -> str:
        assert self.ids is not None
        return self.ids[i] if i < len(self.ids) else f"case-{i}"

    def _finish(self) -> CandidateRun:
        assert self.ids is not None
        for i in self.order:
            if i not in self.skipped:
                self._fail(i, self.error or "not reported")
        cases = tuple(
            CaseResult(r.case_id, r.passed, r.reason, self.costs.get(i, 0))
            for i in self.order if i not in self.skipped for r in (self.results[i],)
        )
        # A box that died before compiling has not shown that the program compiles.
        syntax_ok = self.syntax_ok is True
        return CandidateRun(self.problem.name, cases, syntax_ok, self.error and utf8(self.error), self.boxes, self.wall,
                            self.total_cost, self.meter_kind)


def _verdict(
    recording: record.Recording, reference: list[tuple[int, list[Any]]], candidate: list[tuple[int, list[Any]]] | None
) -> str | None:
    """None when every assert of one test holds, else why not.

    `reference` holds every operand as the reference's box recorded them; `candidate` the
    operands the candidate's box recorded (None: judge the reference itself). The candidate
    must reach the same asserts in the same order as the reference did.
    """
    sites = recording.sites
    if candidate is not None:
        wanted = [site for site, _ in reference if sites.get(site) is not None and _recorded(sites[site])]
        got = [site for site, _ in candidate]
        if got != wanted:
            k = next(k for k in range(len(got) + 1) if k >= len(wanted) or k >= len(got) or got[k] != wanted[k])
            where = wanted[k] if k < len(wanted) else got[k]
            line = sites[where].line if where in sites else 0
            return f"the test took another path than with the reference (line {line})"
        theirs = iter(candidate)
    for site_id, values in reference:
        site = sites.get(site_id)
        if site is None:
            return "unreadable record"
        operands = list(values)
        if candidate is not None and _recorded(site):
            mine = next(theirs)[1]
            if site.kind == "raises":
                if len(mine) != 1:
                    return "unreadable record"
                operands = operands[:2] + [verdicts.from_candidate(mine[0], outcome=True)]
            else:
                if len(mine) != len(site.cand):
                    return "unreadable record"
                own = _own_relation(site, operands, mine)
                if own is not None:
                    return own
                for index, value in zip(site.cand, mine, strict=True):
                    operands[index] = verdicts.from_candidate(value)
        why = _check_site(site, operands)
        if why is not None:
            return why
    return None


def _own_relation(site: record.Site, reference: list[Any], mine: list[Any]) -> str | None:
    """A comparison of two operands that both come from the candidate's box (`position[a] <
    position[b]`) is decided by its process alone: it can record any pair that holds (`0, 1`)
    whatever it returned. Its operands must then be those the reference recorded there, which the
    box never sees (docs/sandbox.md, "Trust by construction"). None when they are."""
    if site.kind != "cmp" or len(site.cand) < 2 or len(reference) != 2:
        return None
    for index, value in zip(site.cand, mine, strict=True):
        if not verdicts.holds("==", verdicts.from_candidate(value), reference[index]):
            return f"line {site.line}: the candidate's own values compared ({site.op}) are not the reference's"
    return None


def _recorded(site: record.Site) -> bool:
    return site.kind == "raises" or bool(site.cand)


def _check_site(site: record.Site, operands: list[Any]) -> str | None:
    if site.kind == "raises":
        if len(operands) != 3:
            return "unreadable record"
        why = verdicts.raised_as_expected(operands[2], operands[0], operands[1])
        return None if why is None else f"line {site.line}: {why}"
    for value in operands:
        if isinstance(value, verdicts.Bad):
            return f"line {site.line}: {value.reason}"
    if site.kind == "cmp":
        if len(operands) != 2:
            return "unreadable record"
        if verdicts.holds(site.op, operands[0], operands[1]):
            return None
        return f"assert failed (line {site.line}, {site.op})"
    if len(operands) != 1:
        return "unreadable record"
    return None if verdicts.truthy(operands[0]) != site.negate else f"assert failed (line {site.line})"


class _BadValue(Exception):
    pass


def _plain(value: Any) -> Any:
    """A decoded JSON-case output as the JSON comparison sees it: tuples as lists; raises
    _BadValue (with the reason) for anything JSON cannot hold."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        for k in value:
            if type(k) is not str:
                raise _BadValue(f"a dict with a {type(k).__name__} key")
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, verdicts.Bad):
        raise _BadValue(value.reason)
    if isinstance(value, verdicts.Obj | verdicts.Approx | verdicts.ExcClass | set | frozenset | bytes | complex):
        raise _BadValue(f"a {type(value).__name__}, not JSON data")
    return value


def _messages(stdout: bytes, nonce: bytes) -> list[dict[str, Any]]:
    """The harness's reports; anything else on the stream (or malformed) is ignored."""
    out = []
    prefix = nonce + b" "
    for raw in stdout.split(b"\n"):
        if raw.startswith(prefix):
            try:
                msg = json.loads(raw[len(prefix) :])
            except (ValueError, RecursionError):  # malformed, or nested past the parser's depth
                continue
            if isinstance(msg, dict):
                out.append(msg)
    return out


def utf8(text: str) -> str:
    """`text` as UTF-8 can hold it. Reasons quote what the box reported, and JSON's escapes carry
    lone surrogates (`raise ValueError(chr(0xdcff))`) that no UTF-8 encoder takes: the job's
    output could not be sent and the run stopped. They become '?'."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _line(text: object) -> str:
    if not isinstance(text, str):
        return ""
    lines = text.strip().splitlines()
    return lines[0][:200] if lines else ""
