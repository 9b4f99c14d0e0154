"""coral.sandbox.objectives: the formulas, the real linters behind style and security, determinism."""

from __future__ import annotations

import pytest

from coral.benchmark.problem import JsonCase, Problem
from coral.sandbox import objectives
from coral.sandbox.objectives import (
    CandidateScore,
    aggregate,
    code_lines,
    fixed_at_k,
    repair_score,
    runtime_score,
    score_candidate,
    score_candidates,
    security_scores,
    style_scores,
)
from coral.sandbox.runner import CandidateRun, CaseResult, RunnerLimits, clear_reference_cache

FAST = RunnerLimits(budget_floor=0.05)
CORRECT = "def total(xs):\n    return sum(xs)\n"
SLOW = "def total(xs):\n    s = 0\n    for x in xs:\n        s = s + x\n    return s\n"
TOTAL = Problem(
    "total",
    buggy_source="def total(xs):\n    return sum(xs[1:])\n",
    correct_source=CORRECT,
    json_cases=(JsonCase(0, [[1, 2, 3]], 6), JsonCase(1, [[]], 0), JsonCase(2, [[5, 5]], 10)),
)


MS = 1_000_000  # task-clock nanoseconds in a millisecond of CPU: the meter's resolution


def run_of(passed: list[bool], cost: float, meter: str | None = "task-clock") -> CandidateRun:
    cases = tuple(CaseResult(f"c{i}", p, None if p else "wrong answer", 0) for i, p in enumerate(passed))
    return CandidateRun("p", cases, True, None, cost=int(cost), meter=meter)


def test_runtime_score_bands_the_ratio_of_whole_run_costs() -> None:
    assert runtime_score(run_of([True, True, False], 40 * MS), 10 * MS) == 0.5  # 4x the reference's work
    assert runtime_score(run_of([True], 5 * MS), 10 * MS) == 1.0  # cheaper than the reference: capped
    # Measurement noise within a band changes nothing: 1.0x and 1.8x the reference score alike.
    assert runtime_score(run_of([True], 10 * MS), 10 * MS) == runtime_score(run_of([True], 18 * MS), 10 * MS) == 1.0
    costs = (21 * MS, 41 * MS, 81 * MS, 500 * MS)
    assert [runtime_score(run_of([True], c), 10 * MS) for c in costs] == [0.5, 0.25, 0.125, 0.125]
    assert runtime_score(run_of([False], 5 * MS), 10 * MS) == 0.0  # nothing passed: no runtime
    assert runtime_score(run_of([True], 0), 0) == 1.0


def test_runtime_below_the_meters_resolution_is_as_fast_as_the_reference() -> None:
    # Measured by `coral validate` (2026-12-03): one candidate at 0.41 ms and 0.57 ms of task
    # clock in two runs, against a reference of about 0.25 ms: across the 2x edge without a floor.
    assert runtime_score(run_of([True], 0.41 * MS), 0.25 * MS) == runtime_score(run_of([True], 0.57 * MS), 0.25 * MS)
    assert runtime_score(run_of([True], 0.9 * MS), 0.1 * MS) == 1.0  # 9x, but all under 1 ms
    assert runtime_score(run_of([True], 3 * MS), 0.1 * MS) == 0.5  # 3 ms against the 1 ms floor
    # On a hardware counter the resolution is 2M instructions (1 ms at the meter's 2e9/s).
    assert runtime_score(run_of([True], 1.9e6, "instructions"), 1e5) == 1.0
    assert runtime_score(run_of([True], 5e6, "instructions"), 1e5) == 0.5  # 2.5x the floor


def test_repair_score_counts_repaired_cases_minus_regressions() -> None:
    buggy = run_of([True, True, False, False], 0)  # passes c0, c1; fails c2, c3
    assert repair_score(run_of([True, True, False, False], 0), buggy) == 0.0  # unchanged
    assert repair_score(run_of([True, True, True, True], 0), buggy) == 1.0  # every failing case, none broken
    assert repair_score(run_of([True, True, True, False], 0), buggy) == 0.5  # half repaired
    assert repair_score(run_of([False, True, True, True], 0), buggy) == 0.5  # all repaired, one broken
    assert repair_score(run_of([False, True, True, False], 0), buggy) == 0.0  # one repaired, one broken
    assert repair_score(run_of([False, False, False, False], 0), buggy) == 0.0  # worse than echo: floor
    assert repair_score(CandidateRun("p", (), False, "syntax error"), buggy) == 0.0  # nothing ran
    # Nothing to repair (the tests do not catch the bug): the pass rate, so regressions still cost.
    assert repair_score(run_of([True, False], 0), run_of([True, True], 0)) == 0.5


def test_bugfix_credits_repair_in_the_sandbox() -> None:
    """Real runs of TOTAL (the buggy program passes case 1 and fails cases 0 and 2): returning it
    unchanged scores 0 where the pass rate gave it 1/3; a regression costs a repaired case."""
    half = "def total(xs):\n    return sum(xs) if len(xs) != 2 else 0\n"  # repairs case 0 only
    trade = "def total(xs):\n    return sum(xs) if xs else 1\n"  # repairs 0 and 2, breaks 1
    even = "def total(xs):\n    return sum(xs) if len(xs) == 3 else -1\n"  # repairs 0, breaks 1
    echo, fixed, h, t, e = score_candidates(
        [(TOTAL, TOTAL.buggy_source), (TOTAL, CORRECT), (TOTAL, half), (TOTAL, trade), (TOTAL, even)], limits=FAST)
    assert [s.bugfix for s in (echo, fixed, h, t, e)] == [0.0, 1.0, 0.5, 0.5, 0.0]
    assert fixed.fixed and not t.fixed


def test_code_lines_skip_blanks_and_comments() -> None:
    assert code_lines("# c\n\nx = 1\n    # indented comment\ny = '#'\n") == 2


def test_fixed_at_k() -> None:
    assert fixed_at_k(1, 1, 1) == 1.0 and fixed_at_k(3, 0, 3) == 0.0
    assert fixed_at_k(3, 1, 3) == 1.0  # k == samples: any fixed sample counts
    assert fixed_at_k(4, 1, 1) == pytest.approx(0.25)
    assert fixed_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)


def score(problem: str, value: float, fixed: bool = False) -> CandidateScore:
    return CandidateScore(problem, value, 1.0, value, value, value, fixed, ())


def test_aggregate_weighs_problems_equally() -> None:
    scores = [score("p", 1.0, True), score("p", 0.0), score("q", 0.5), score("q", 0.5)]
    agg = aggregate(scores, k=2)
    assert agg.bugfix == pytest.approx(0.5) and agg.syntax == 1.0
    assert agg.fixed_at_k == pytest.approx(0.5)  # p has a fixed sample, q has none
    assert (agg.problems, agg.candidates, agg.k) == (2, 4, 2)
    assert aggregate(scores, k=1).fixed_at_k == pytest.approx(0.25)
    with pytest.raises(ValueError, match="fewer than k=3"):
        aggregate(scores, k=3)
    with pytest.raises(ValueError):
        aggregate([], k=1)


def test_style_comes_from_ruff_and_ignores_noqa() -> None:
    clean, messy = style_scores([CORRECT, "import os\ndef total(xs):\n    l = 1  # noqa\n    return sum(xs)\n"])
    assert clean == (1.0, ())
    assert messy[1] == ("E741", "F401", "F841")
    assert messy[0] == pytest.approx(1 - 3 / 4)


def test_security_comes_from_bandit_weighted_by_severity() -> None:
    sources = [
        CORRECT,
        "def total(xs):\n    return eval(repr(sum(xs)))  # nosec\n",
        "import os\ndef total(xs):\n    os.system(repr(xs))\n    return sum(xs)\n",
    ]
    safe, medium, high = security_scores(sources)
    assert safe == (1.0, ())
    assert medium == (pytest.approx(1 - 3 / 9), ("B307:MEDIUM",))
    assert high[0] == 0.0 and "B605:HIGH" in high[1]


def test_linters_survive_sources_that_do_not_parse() -> None:
    sources = ["def f(:\n", "x = 1\x00\n", "s = '\udcff'\n", "", "import os\nos.system(input())\n"]
    styles, securities = style_scores(sources), security_scores(sources)
    assert [s[0] for s in styles] == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert securities[-1] == (0.0, ("B605:HIGH",)) and len(securities) == 5


def test_batched_linting_equals_one_at_a_time() -> None:
    sources = ["import os\ndef total(xs):\n    os.system('ls')\n    return sum(xs)\n", CORRECT, "x=1\nl = eval('2')\n"]
    assert style_scores(sources) == [style_scores([s])[0] for s in sources]
    assert security_scores(sources) == [security_scores([s])[0] for s in sources]


def test_score_of_correct_buggy_and_slow_candidates() -> None:
    good = score_candidate(TOTAL, CORRECT, FAST)
    assert {k: v for k, v in good.objectives().items() if k != "runtime"} == {
        "bugfix": 1.0, "syntax": 1.0, "style": 1.0, "security": 1.0}
    assert good.fixed and good.runtime >= 0.5  # the reference itself: at most one band of CPU-time noise
    # A candidate that does far more work than the reference (a 300,000-step loop per case) drops bands.
    slow_src = "def total(xs):\n    for _ in range(300_000):\n        pass\n    return sum(xs)\n"
    buggy, slow = score_candidates([(TOTAL, TOTAL.buggy_source), (TOTAL, slow_src)], limits=FAST)
    assert buggy.bugfix == 0.0 and not buggy.fixed and buggy.runtime > 0  # it passes 1 of 3: no repair
    assert slow.fixed and 0 < slow.runtime <= 0.5


def test_objectives_from_code_alone_are_not_gated_on_tests() -> None:
    """Syntax, style and security say something about a candidate that passes nothing; only
    runtime needs a passing case. Style is judged against the reference, security against the
    buggy program: adding risk loses, matching the reference's tidiness scores 1."""
    empty = score_candidate(TOTAL, "def total(xs):\n    return None\n", limits=FAST)
    assert empty.objectives() == {"bugfix": 0.0, "syntax": 1.0, "style": 1.0, "security": 1.0, "runtime": 0.0}
    broken = score_candidate(TOTAL, "def total(xs:\n", limits=FAST)
    assert (broken.bugfix, broken.syntax, broken.runtime) == (0.0, 0.0, 0.0)
    assert broken.style < 1.0  # ruff reports the syntax error as a violation
    assert broken.error.startswith("syntax error")
    risky = "import os\ndef total(xs):\n    return eval('sum(xs)')\n"  # fixes it, with risk
    untidy = "def total(xs):\n    s = 0\n    for x in xs:\n        s += x\n    l = s ;  return l\n"
    nothing = score_candidate(TOTAL, "", limits=FAST)
    r, u = score_candidates([(TOTAL, risky), (TOTAL, untidy)], limits=FAST)
    assert r.fixed and r.security == 0.0
    assert "policy:exec-call" in r.security_issues and "policy:risky-import" in r.security_issues
    assert u.fixed and u.style == pytest.approx(1 - 2 / 5) and u.security == 1.0  # E702, E741
    assert (nothing.syntax, nothing.style) == (0.0, 0.0)


def test_security_is_relative_to_the_buggy_program() -> None:
    """A risky construct the buggy program already has costs nothing; one more does."""
    shown = Problem("total", buggy_source="import os\ndef total(xs):\n    return sum(xs[1:])\n",
                    correct_source=CORRECT, json_cases=TOTAL.json_cases)
    same, more = score_candidates([
        (shown, "import os\ndef total(xs):\n    return sum(xs)\n"),
        (shown, "import os\nimport sys\ndef total(xs):\n    return sum(xs)\n"),
    ], limits=FAST)
    assert same.security == 1.0 and more.security == pytest.approx(1 - 3 / 9)


# Ways to reach eval, the builtins and other frames without calling a name the policy knew:
# each scored security 1 (nothing found) before it looked at references, strings and frames.
DISGUISED_RISK = {
    "builtins by subscript": ("def total(xs):\n    return __builtins__['eval']('sum(xs)')\n",
                              {"dunder-access", "exec-call"}),
    "eval by alias": ("def total(xs):\n    run = eval\n    return run('sum(xs)')\n", {"exec-call"}),
    "import by alias": ("def total(xs):\n    load = __import__\n    return sum(xs)\n", {"exec-call"}),
    "getattr by name": ("def total(xs):\n    pick = getattr\n    return sum(xs)\n", {"introspection-call"}),
    "format field": ("def total(xs):\n    '{0.__class__}'.format(xs)\n    return sum(xs)\n",
                     {"dunder-access"}),
    # Bandit loses its HIGH finding when the command goes by keyword only: only the import was left.
    "shell by keyword": ("import subprocess\ndef total(xs):\n    subprocess.call(args='true', shell=True)\n"
                         "    return sum(xs)\n", {"process-call"}),
    "command by keyword": ("import os\ndef total(xs):\n    os.popen(cmd='true')\n    return sum(xs)\n",
                           {"process-call"}),
    "other frames": ("def total(xs):\n    g = (i for i in xs)\n    g.gi_frame.f_back\n    return sum(xs)\n",
                     {"frame-access"}),
}


@pytest.mark.parametrize("name", sorted(DISGUISED_RISK))
def test_security_sees_disguised_risk(name: str) -> None:
    source, expected = DISGUISED_RISK[name]
    scored = score_candidate(TOTAL, source, limits=FAST)
    assert scored.fixed  # every one of them is a working fix: only security may tell them apart
    assert {i.removeprefix("policy:") for i in scored.security_issues} >= expected
    assert scored.security < 1.0


def test_security_leaves_main_guards_and_docstrings_alone() -> None:
    """Text about dunders and a main guard are not reaching for anything."""
    source = ('def total(xs):\n    """Like eval of sum; see __repr__."""\n    return sum(xs)\n\n\n'
              'if __name__ == "__main__":\n    print(total([1]))\n')
    assert score_candidate(TOTAL, source, limits=FAST).security == 1.0


# Verdicts that would vary from run to run without the harness's seeding of `random` and
# the box's fixed memory layout (objects hash by address: set order follows addresses).
RANDOM = "import random\ndef total(xs):\n    return sum(xs) + (random.random() < 0.5)\n"
ADDRESSES = "def total(xs):\n    return sum(xs) + (id(object()) >> 16) % 2\n"


def test_same_candidate_same_verdicts() -> None:
    items = [(TOTAL, src) for src in (CORRECT, SLOW, TOTAL.buggy_source, RANDOM, ADDRESSES)]
    first = score_candidates(items, limits=FAST)
    second = score_candidates(items, limits=FAST, workers=1)
    for a, b in zip(first, second, strict=True):  # CPU time (runtime) is the one thing that varies
        verdicts = [[(c.case_id, c.passed, c.reason) for c in s.cases] for s in (a, b)]
        assert (a.bugfix, a.syntax, a.style, a.security) == (b.bugfix, b.syntax, b.style, b.security)
        assert verdicts[0] == verdicts[1]
    assert 0 < first[3].bugfix < 1  # the random stream differs per case, the same on every run


def test_reference_runs_once_per_problem_content(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = objectives.run_candidate

    def counting(problem, source, limits=None):
        calls.append(source)
        return real(problem, source, limits)

    monkeypatch.setattr(objectives, "run_candidate", counting)
    clear_reference_cache()
    fresh = Problem("total", "", CORRECT + "\n", TOTAL.json_cases)
    first = objectives.reference(fresh, FAST)
    score_candidates([(fresh, SLOW), (fresh, CORRECT), (fresh, SLOW)], limits=FAST)
    assert objectives.reference(fresh, FAST) is first  # the reference ran once
    assert calls.count(SLOW) == 2 and calls.count(CORRECT) == 1  # candidates are never cached
    score_candidates([(fresh, CORRECT)], limits=FAST)
    assert calls.count("") == 1  # the buggy program (bugfix's yardstick) ran once, like the reference


def test_the_buggy_programs_run_is_cached_per_limits() -> None:
    """The buggy program runs as a candidate, so every limit can change its verdict or cost: the
    same limits reuse its run, other limits (even one that only shapes candidates' budgets) run it
    again (it was keyed on budget_ceiling alone)."""
    first = objectives.buggy_run(TOTAL, FAST)
    assert objectives.buggy_run(TOTAL, FAST) is first
    other = objectives.buggy_run(TOTAL, RunnerLimits(budget_floor=0.05, budget_factor=7.0))
    assert other is not first
    assert [c.passed for c in other.cases] == [c.passed for c in first.cases]
