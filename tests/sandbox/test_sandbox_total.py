"""The trusted side is total: no candidate output, report line or tool crash stops a run.

Whatever the candidate's box reports (huge ints, NaN, deep nesting, forged tags, garbage lines)
and whatever the linters do with its code, each case gets a verdict with a reason and each
objective a score: nothing raises out of the runner or the objectives (issue 29 items 2 and 6).
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import pytest

from coral.benchmark.problem import JsonCase, Problem
from coral.sandbox import objectives, verdicts
from coral.sandbox.quality import risk, risk_findings
from coral.sandbox.runner import RunnerLimits, _messages, _Session, outputs_match, reference, run_candidate

sys.path.insert(0, str(Path(__file__).parent))
from test_sandbox_hostile import ADD, NUMBERS, SQRT

LIMITS = RunnerLimits(budget_floor=0.1, wall_seconds=60, cpu_seconds=20)
FLOATS = Problem("f", "", "def f(a, b):\n    return a / b\n", (JsonCase(0, [1, 4], 0.25), JsonCase(1, [9, 3], 3.0)))
_HARNESS = "import sys\nH = sys.modules['__main__']\n"


# --- adversarial values, generated --------------------------------------------------------------

_ATOMS: list[object] = [
    0, -1, 10**400, -(10**400), 2**63, 1e308, -1e308, math.inf, -math.inf, math.nan, 1e-320, True, False, None,
    "", "x" * 1000, "\udcff", "$a", {"$a": 0, "abs": 1e300}, {"$a": 0, "abs": "huge"},
    {"$a": math.nan, "rel": math.inf},
    {"$e": ["builtins.Exception"]}, {"$r": ["builtins.object"], "m": 1}, {"$r": 5}, {"$x": None}, {"$o": "n"},
    {"$t": 3}, {"$s": [[1]]}, {"$f": [{"$d": []}]}, {"$d": [[1]]}, {"$d": 7}, {"$b": "zz"}, {"$c": [1]},
    {"$c": ["a", "b"]}, {"$c": [10**400, 1]}, {}, {"?": 1}, [], [[[]]],
]


def _value(rng: random.Random, depth: int = 0) -> object:
    roll = rng.random()
    if depth > 4 or roll < 0.5:
        return rng.choice(_ATOMS)
    if roll < 0.7:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    tag = rng.choice(["$t", "$s", "$f", "$a", "$d"])
    if tag == "$d":
        return {"$d": [[_value(rng, depth + 1), _value(rng, depth + 1)] for _ in range(rng.randint(0, 2))]}
    if tag == "$a":
        return {"$a": _value(rng, depth + 1), "rel": rng.choice([None, 1e-6, math.nan, 10**400]),
                "abs": rng.choice([None, 0.1, math.inf, -1.0])}
    return {tag: [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]}


def _deep(n: int) -> str:
    return "[" * n + "]" * n


def _reports(rng: random.Random, n_cases: int, sites: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = [{"t": "compiled", "ok": True}, {"t": "imported", "ok": True}]
    for _ in range(30):
        i = rng.choice([*range(n_cases), -1, n_cases + 5, 10**400, "0", None, 1.0])
        kind = rng.choice(["case", "item", "item", "collected", "done", "imported", "?"])
        if kind == "case":
            out.append(rng.choice([{"t": "case", "i": i, "out": _value(rng)},
                                   {"t": "case", "i": i, "error": _value(rng)}, {"t": "case", "i": i}]))
        elif kind == "item":
            rec = rng.choice([
                [[rng.randrange(sites), [_value(rng) for _ in range(rng.randint(0, 3))]]],
                [[s, [_value(rng)]] for s in range(sites)],
                [[rng.choice([-1, "0", None, 10**400]), _value(rng)]], _value(rng), None,
            ])
            out.append({"t": "item", "i": i, "rec": rec, "end": rng.choice(["ok", "skip", "error", None, 5]),
                        "error": _value(rng)})
        else:
            out.append({"t": kind, "ids": _value(rng), "ok": _value(rng), "error": _value(rng)})
    return out


@pytest.mark.parametrize("problem", [FLOATS, NUMBERS, ADD, SQRT], ids=lambda p: p.name)
def test_random_and_adversarial_reports_never_raise(problem: Problem) -> None:
    """The trusted side's decode, judge and verdict over generated reports: a verdict for every
    case, never an exception (run on the problem's real reference)."""
    ref = reference(problem, LIMITS)
    assert ref.run.fixed, ref.run.cases
    rng = random.Random(29)
    sites = max(1, len(ref.recording.sites) if ref.recording is not None else 1)
    for _ in range(150):
        session = _Session(problem, problem.correct_source, LIMITS, ref)
        session._absorb(_reports(rng, len(session.order), sites))
        run = session._finish()
        assert run.total == len(session.order) and all(c.passed or c.reason for c in run.cases)


def test_report_lines_the_parser_cannot_take_are_ignored() -> None:
    nonce = b"n" * 32
    lines = [b"n" * 32 + b" " + _deep(200_000).encode(), nonce + b" " + b'{"t": "done"}', nonce + b" \xff\xfe",
             nonce + b" " + b"1" * 10_000, nonce + b" " + json.dumps({"t": "x", "v": [1e308] * 3}).encode()]
    assert _messages(b"\n".join(lines), nonce) == [{"t": "done"}, {"t": "x", "v": [1e308] * 3}]


def test_comparisons_are_total() -> None:
    """Every operator on every pair of odd values: a bool, never an exception."""
    values = [verdicts.decode(v) for v in _ATOMS] + [
        verdicts.Approx(1.5, None, 0.1), verdicts.Approx([1.0], 1e-6, None), verdicts.Approx({"k": 1.0}, None, None),
        10**400, math.nan]
    for a in values:
        for b in values:
            for op in ("==", "!=", "<", "<=", ">", ">=", "is", "is not", "in", "not in"):
                assert verdicts.holds(op, a, b) in (True, False)
            assert verdicts.truthy(a) in (True, False)
            assert outputs_match(a, b) in (True, False)
    assert not outputs_match(10**400, 1.5) and not verdicts.holds("==", 10**400, verdicts.Approx(1.5, None, 0.01))


# --- the same, through the real box ------------------------------------------------------------

HOSTILE_OUTPUTS = {
    # sqrt_newton's plausible bug: an int that grows past float range where a float is expected
    "huge-int": "def f(a, b):\n    return 10 ** 400\ndef sqrt(x, epsilon):\n    return 10 ** 400\n"
    "def add(a, b):\n    return 10 ** 400\n",
    "nan": "def f(a, b):\n    return float('nan')\ndef sqrt(x, epsilon):\n    return float('nan')\n"
    "def add(a, b):\n    return float('nan')\n",
    "huge-int-list": "def f(a, b):\n    return [10 ** 400, -10 ** 400]\ndef sqrt(x, epsilon):\n    return [10 ** 400]\n"
    "def add(a, b):\n    return [10 ** 400]\n",
    "deep-value": "def _d():\n    v = []\n    for _ in range(100_000):\n        v = [v]\n    return v\n"
    "def f(a, b):\n    return _d()\ndef sqrt(x, epsilon):\n    return _d()\ndef add(a, b):\n    return _d()\n",
    # The report line itself, written with the harness's writer: nested 200k deep.
    "deep-report": _HARNESS + "def _r():\n"
    "    H._write('{\"t\":\"case\",\"i\":0,\"out\":' + '[' * 200000 + ']' * 200000 + '}')\n"
    "    H._write('{\"t\":\"item\",\"i\":0,\"rec\":' + '[' * 200000 + ']' * 200000 + '}')\n    return 0\n"
    "def f(a, b):\n    return _r()\ndef sqrt(x, epsilon):\n    return _r()\ndef add(a, b):\n    return _r()\n",
    "garbage-report": _HARNESS + "def _r():\n"
    "    for line in ('{\"t\":\"case\",\"i\":0,\"out\":{\"$c\":[1e999,1]}}', '{\"t\":\"item\",\"i\":0,\"rec\":[[0,"
    "[{\"$s\":[[1]]}]]],\"end\":\"ok\"}', '{\"t\":\"case\",\"i\":0,\"out\":{\"$d\":[[[1],2]]}}', '[1,2]', 'null'):\n"
    "        H._write(line)\n    return 0\n"
    "def f(a, b):\n    return _r()\ndef sqrt(x, epsilon):\n    return _r()\ndef add(a, b):\n    return _r()\n",
}


def test_hostile_outputs_fail_their_cases_and_the_batch_finishes() -> None:
    """A batch whose every candidate does one of these is scored: every case failed, with its
    reason; no exception out of the runner or the objectives."""
    problems = [FLOATS, NUMBERS, ADD, SQRT]
    items = [(p, src) for p in problems for src in HOSTILE_OUTPUTS.values()]
    scores = objectives.score_candidates(items, limits=LIMITS)
    for (problem, _), name, score in zip(items, list(HOSTILE_OUTPUTS) * len(problems), scores, strict=True):
        assert not score.fixed and score.bugfix == 0.0, (problem.name, name, score.cases)
        assert all(c.reason for c in score.cases), (problem.name, name, score.cases)
    huge = run_candidate(FLOATS, HOSTILE_OUTPUTS["huge-int"], LIMITS)
    assert {c.reason for c in huge.cases} == {"wrong answer"}


# --- linters fail closed (item 6) ----------------------------------------------------------------

PLAIN = "def f(a, b):\n    return a + b\n"
RISKY = "import os\n\n\ndef f(a, b):\n    os.system(a)\n    return b\n"


def test_a_file_ruff_cannot_lint_scores_worst_and_the_batch_still_scores() -> None:
    deep = "def f(a, b):\n    return " + "a+" * 10_000 + "a\n"  # ruff overflows its stack and aborts
    scores = objectives.style_scores([PLAIN, deep, "import os\n" + PLAIN])
    assert scores[1] == (0.0, (objectives.RUFF_FAILED,))
    assert scores[0] == (1.0, ())
    assert scores[2][0] < 1.0 and scores[2][1]  # the others are linted as before
    own = (0.0, 0.0)
    style, _ = objectives.relative_quality(deep, own, scores[1], (1.0, ()))
    assert style[0] == 0.0  # relative to the reference too: one "violation" is not a near-perfect score


def test_a_file_bandit_cannot_analyse_scores_worst() -> None:
    """A deep `~` chain made bandit skip the file silently: its HIGH issue vanished."""
    tilde = RISKY.replace("return b", "return " + "~" * 1600 + "b")
    compile(tilde, "t.py", "exec")  # it is valid Python: bandit's failure, not the candidate's syntax
    (plain_score, plain), (tilde_score, issues), (_, broken) = objectives.security_scores([RISKY, tilde, "def f(:\n"])
    assert plain == ("B605:HIGH",) and tilde_score == 0.0
    assert "bandit-failed:UNANALYSED" in issues
    assert broken == ()  # a syntax error is the syntax objective's to score
    # The buggy program is RISKY itself (bandit's HIGH issue and the policy's findings): the
    # candidate adds nothing bandit can see.
    buggy_risk = risk(9.0, risk_findings(RISKY))
    _, security = objectives.relative_quality(tilde, (0.0, buggy_risk), (1.0, ()), (tilde_score, issues))
    assert security[0] == 0.0
    _, honest = objectives.relative_quality(RISKY, (0.0, buggy_risk), (1.0, ()), (plain_score, plain))
    assert honest[0] == 1.0


def test_reasons_quoting_the_box_are_utf8_text() -> None:
    """JSON's escapes carry lone surrogates: `raise ValueError(chr(0xdcff))` put one into a case's
    reason, and a test job's output then could not be sent (UnicodeEncodeError): the run stopped."""
    lone = "def f(a, b):\n    raise ValueError('bad ' + chr(0xdcff))\n"
    at_import = "raise ValueError(chr(0xdcff))\n" + lone
    for source in (lone, at_import):
        score = objectives.score_candidates([(FLOATS, source)], limits=LIMITS)[0]
        assert not score.fixed and all(c.reason for c in score.cases), score.cases
        texts = [c.reason or "" for c in score.cases] + [score.error or ""]
        for text in texts:
            text.encode("utf-8")  # raised UnicodeEncodeError before
        assert "ValueError: " in (score.error or score.cases[0].reason or ""), score
