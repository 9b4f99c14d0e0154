"""A QuixBugs clone: `coral bench check` runs it as QuixBugs' own tests run it, and finds it sound.

The repository ships no QuixBugs code, so the clone is built here in QuixBugs' layout (its
load_testdata.py returning raw `[input, expected]` pairs, node.py in both program folders,
tests that parametrize over JSON data) around the mini benchmark, with problems shaped like
the five that a fixed step budget, strict types and a fixed float tolerance got wrong:
knapsack (a slow case its test skips unless --runslow), levenshtein and
longest_common_subsequence (exponential references), shortest_path_lengths (returns a
defaultdict, compared with ==) and sqrt (compared with pytest.approx(expected, abs=epsilon)).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

from conftest import REPO, run_coral

from coral.benchmark.loader import load_benchmark
from coral.sandbox.runner import RunnerLimits, reference

MINI = REPO / "tests" / "fixtures" / "mini_bench"

LOAD_TESTDATA = '''import json
import pathlib


def load_json_testcases(algorithm_name):
    tests_path = pathlib.Path(__file__).parent / "../json_testcases"
    with open(tests_path / f"{algorithm_name}.json", "r") as f:
        return [json.loads(line) for line in f]
'''

JSON_TEST = '''import pytest
from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.{name} import {name}
else:
    from python_programs.{name} import {name}


testdata = load_json_testcases({name}.__name__)


@pytest.mark.parametrize("input_data,expected", testdata)
def test_{name}(input_data, expected):
{body}
'''

KNAPSACK = '''def knapsack(capacity, items):
    from collections import defaultdict
    memo = defaultdict(int)

    for i in range(1, len(items) + 1):
        weight, value = items[i - 1]

        for j in range(1, capacity + 1):
            memo[i, j] = memo[i - 1, j]

            if weight <= j:
                memo[i, j] = max(
                    memo[i, j],
                    value + memo[i - 1, j - weight]
                )

    return memo[len(items), capacity]
'''
SLOW_KNAPSACK = [6404180, [[382745, 825594], [799601, 1677009], [909247, 1676628], [729069, 1523970]]]

LEVENSHTEIN = '''def levenshtein(source, target):
    if source == '' or target == '':
        return len(source) or len(target)

    elif source[0] == target[0]:
        return levenshtein(source[1:], target[1:])

    else:
        return 1 + min(
            levenshtein(source,     target[1:]),
            levenshtein(source[1:], target[1:]),
            levenshtein(source[1:], target)
        )
'''
SLOW_LEVENSHTEIN = ["amanaplanacanalpanama", "docnoteidissentafastneverpreventsafatnessidietoncod"]

LCS = '''def longest_common_subsequence(a, b):
    if not a or not b:
        return ''

    elif a[0] == b[0]:
        return a[0] + longest_common_subsequence(a[1:], b[1:])

    else:
        return max(
            longest_common_subsequence(a, b[1:]),
            longest_common_subsequence(a[1:], b),
            key=len
        )
'''

SHORTEST = '''from collections import defaultdict


def shortest_path_lengths(n, length_by_edge):
    length_by_path = defaultdict(lambda: float('inf'))
    length_by_path.update({(i, i): 0 for i in range(n)})
    length_by_path.update(length_by_edge)

    for k in range(n):
        for i in range(n):
            for j in range(n):
                length_by_path[i, j] = min(
                    length_by_path[i, j],
                    length_by_path[i, k] + length_by_path[k, j]
                )

    return length_by_path
'''
LINEAR = {(0, 1): 3, (1, 2): 5, (2, 3): -2, (3, 4): 7}
SHORTEST_GRAPH = {(0, 2): 3, (0, 5): 5, (2, 1): -2, (2, 3): 7, (2, 4): 4, (3, 4): -5, (4, 5): -1}

SQRT_BODY = "    assert sqrt(*input_data) == pytest.approx(expected, abs=input_data[-1])"
SQRT = '''def sqrt(x, epsilon):
    approx = x / 2
    while abs(x - approx ** 2) > epsilon:
        approx = 0.5 * (approx + x / approx)
    return approx
'''


def _run(source: str, name: str, *args: object) -> object:
    """Our own reference code (not a candidate's), run here to write the expected values."""
    namespace: dict[str, object] = {}
    exec(source, namespace)
    return namespace[name](*args)


def _problem(root: Path, name: str, correct: str, buggy: str, test: str, cases: list[list[object]] | None) -> None:
    (root / "correct_python_programs" / f"{name}.py").write_text(correct)
    (root / "python_programs" / f"{name}.py").write_text(buggy)
    (root / "python_testcases" / f"test_{name}.py").write_text(test)
    if cases is not None:
        lines = [json.dumps(case) for case in cases]
        (root / "json_testcases" / f"{name}.json").write_text("\n".join(lines) + "\n")


def build_clone(root: Path) -> Path:
    # The references' recursion (knapsack, levenshtein) needs a deeper stack to compute expected
    # values here; the limit is put back after, since it is process-wide (bandit's depth in later
    # tests depends on it).
    limit = sys.getrecursionlimit()
    try:
        return _build_clone(root)
    finally:
        sys.setrecursionlimit(limit)


def _build_clone(root: Path) -> Path:
    shutil.copytree(MINI, root, ignore=shutil.ignore_patterns("__pycache__", "split.json"))
    (root / "python_testcases" / "load_testdata.py").write_text(LOAD_TESTDATA)
    shutil.copy(root / "python_testcases" / "node.py", root / "correct_python_programs" / "node.py")

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    items = [[[60, 10], [50, 8], [20, 4], [20, 4], [8, 3], [3, 2]], [[30, 10], [50, 5], [10, 20], [40, 25]],
             [[12, 24], [7, 13], [11, 23], [8, 15], [9, 16]]]
    knapsack = [[[c, its], _run(KNAPSACK, "knapsack", c, its)] for c, its in ((100, items[0]), (40, items[1]),
                                                                              (26, items[2]), (8, items[2]))]
    knapsack.append([SLOW_KNAPSACK, 3403572])  # never run: its test skips it, as QuixBugs' does
    skip = "    if input_data == {slow!r} and not pytest.run_slow:\n        pytest.skip('Takes about 4 mins')\n"
    body = skip.format(slow=SLOW_KNAPSACK) + "    assert knapsack(*input_data) == expected"
    _problem(root, "knapsack", KNAPSACK, KNAPSACK.replace("weight <= j", "weight < j"),
             JSON_TEST.format(name="knapsack", body=body), knapsack)

    pairs = [["electron", "neutron"], ["kitten", "sitting"], ["abcdefg", "gabcdef"], ["", ""],
             ["hello", "olleh"], ["amanaplan", "docnoteid"]]  # the last: ~1e6 calls, far over any line budget
    lev = [[p, _run(LEVENSHTEIN, "levenshtein", *p)] for p in pairs] + [[SLOW_LEVENSHTEIN, 42]]
    body = skip.format(slow=SLOW_LEVENSHTEIN) + "    assert levenshtein(*input_data) == expected"
    buggy = LEVENSHTEIN.replace("return levenshtein(source[1:], target[1:])\n\n    else",
                                "return 1 + levenshtein(source[1:], target[1:])\n\n    else")
    _problem(root, "levenshtein", LEVENSHTEIN, buggy, JSON_TEST.format(name="levenshtein", body=body), lev)

    pairs = [["headache", "pentadactyl"], ["daenarys", "targaryen"], ["XMJYAUZ", "MZJAWXU"], ["a", "b"],
             ["aa", "a"], ["abcdefgh", "hgfedcbaabcd"]]
    lcs = [[p, _run(LCS, "longest_common_subsequence", *p)] for p in pairs]
    _problem(root, "longest_common_subsequence", LCS,
             LCS.replace("longest_common_subsequence(a[1:], b[1:])", "longest_common_subsequence(a[1:], b)"),
             JSON_TEST.format(name="longest_common_subsequence",
                              body="    assert longest_common_subsequence(*input_data) == expected"), lcs)

    expected = dict(_run(SHORTEST, "shortest_path_lengths", 6, SHORTEST_GRAPH))
    test = (
        "import pytest\n\nif pytest.use_correct:\n"
        "    from correct_python_programs.shortest_path_lengths import shortest_path_lengths\n"
        "else:\n    from python_programs.shortest_path_lengths import shortest_path_lengths\n\n\n"
        "def test1():\n    \"\"\"Case 1: Basic graph input.\"\"\"\n"
        f"    graph = {SHORTEST_GRAPH!r}\n"
        "    result = shortest_path_lengths(6, graph)\n\n"
        f"    expected = {expected!r}\n".replace("inf", "float('inf')") +
        "    assert result == expected\n\n\n"
        "def test2():\n    \"\"\"Case 2: Linear graph input.\"\"\"\n"
        "    graph = {(0, 1): 3, (1, 2): 5, (2, 3): -2, (3, 4): 7}\n"
        "    result = shortest_path_lengths(5, graph)\n\n"
        "    expected = dict(_EXPECTED2)\n"
        "    assert result == expected\n\n\n"
        f"_EXPECTED2 = {dict(_run(SHORTEST, 'shortest_path_lengths', 5, LINEAR))!r}\n"
        .replace("inf", "float('inf')")
    )
    _problem(root, "shortest_path_lengths", SHORTEST,
             SHORTEST.replace("length_by_path[k, j]", "length_by_path[j, k]"), test, None)

    # QuixBugs' expected values are the true roots: the reference lands within epsilon of them,
    # not within a relative 1e-6.
    sqrt = [[[x, eps], math.sqrt(x)] for x, eps in ((2, 0.01), (2, 0.5), (2, 0.3), (4, 0.2), (27, 0.01),
                                                    (33, 0.05), (170, 0.03))]
    _problem(root, "sqrt", SQRT, SQRT.replace("abs(x - approx ** 2)", "abs(x - approx)"),
             JSON_TEST.format(name="sqrt", body=SQRT_BODY), sqrt)
    return root


def test_quixbugs_clone_is_sound(tmp_path: Path) -> None:
    root = build_clone(tmp_path / "quixbugs")
    result = run_coral("bench", "check", str(root), "--json", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    problems = {p["name"]: p for p in json.loads(result.stdout)["problems"]}
    assert set(problems) == {p.name for p in load_benchmark(root)} >= {
        "knapsack", "levenshtein", "longest_common_subsequence", "shortest_path_lengths", "sqrt"}
    for entry in problems.values():
        assert entry["correct"]["passed"] == entry["correct"]["total"] > 0, entry
        assert entry["buggy"]["passed"] < entry["buggy"]["total"], entry
    # The slow cases are skipped as QuixBugs' tests skip them, not run and not counted.
    assert problems["knapsack"]["correct"]["total"] == 4
    assert problems["levenshtein"]["correct"]["total"] == 6
    assert problems["shortest_path_lengths"]["correct"]["total"] == 2


def test_slow_reference_is_calibrated_not_stopped(tmp_path: Path) -> None:
    """The exponential reference's heavy case costs more than the per-case floor, and passes:
    the candidates' budget for that case follows it."""
    root = build_clone(tmp_path / "quixbugs")
    problem = next(p for p in load_benchmark(root) if p.name == "levenshtein")
    ref = reference(problem, RunnerLimits())
    assert ref.run.fixed, ref.run.cases
    light, heavy = ref.items[0], ref.items[5]  # electron/neutron; amanaplan/docnoteid
    assert ref.ids[heavy].startswith("test_levenshtein[input_data5-")
    if ref.meter == "task-clock":
        assert ref.costs[heavy] / 1e9 > RunnerLimits().budget_floor
        assert ref.costs[heavy] > 20 * ref.costs[light]
