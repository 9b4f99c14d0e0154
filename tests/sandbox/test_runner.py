"""coral.sandbox.runner: judging good and buggy candidates, JSON and pytest-style."""

from __future__ import annotations

import pytest

from coral.benchmark.problem import JsonCase, Problem
from coral.sandbox.runner import CandidateRun, RunnerLimits, check_problem, outputs_match, run_candidate

FAST = RunnerLimits(budget_floor=0.05)


def json_problem(name: str, correct: str, cases: list[tuple[list, object]], buggy: str = "") -> Problem:
    return Problem(
        name=name,
        buggy_source=buggy,
        correct_source=correct,
        json_cases=tuple(JsonCase(i, args, expected) for i, (args, expected) in enumerate(cases)),
    )


def reasons(run: CandidateRun) -> list[str | None]:
    return [c.reason for c in run.cases]


def test_outputs_match() -> None:
    assert outputs_match([1, [2.0000000001, "a"]], [1, [2, "a"]])
    assert outputs_match(0.1 + 0.2, 0.3) and outputs_match(1e-12, 0.0)
    assert outputs_match({"a": [1]}, {"a": (1,)})
    assert not outputs_match(1.001, 1.0)
    assert not outputs_match([1, 2], [1, 2, 3])
    assert not outputs_match("1", 1) and not outputs_match(None, 0) and not outputs_match([], {})


SORT = json_problem(
    "sort_desc",
    "def sort_desc(xs):\n    return sorted(xs, reverse=True)\n",
    [([[3, 1, 2]], [3, 2, 1]), ([[]], []), ([[1.5, -2]], [1.5, -2])],
)


def test_good_and_buggy_json_candidates() -> None:
    good = run_candidate(SORT, SORT.correct_source, FAST)
    assert good.fixed and good.syntax_ok and good.error is None and good.boxes == 1
    assert [c.case_id for c in good.cases] == ["case-0", "case-1", "case-2"]
    assert good.meter is None or (good.cost > 0 and all(c.cost > 0 for c in good.cases))
    buggy = run_candidate(SORT, "def sort_desc(xs):\n    return sorted(xs)\n", FAST)
    assert [c.passed for c in buggy.cases] == [False, True, False]
    assert reasons(buggy) == ["wrong answer", None, "wrong answer"]


def test_generators_tuples_and_floats_are_judged_as_values() -> None:
    problem = json_problem(
        "halves",
        "",
        [([[2, 3]], [1.0, 1.5]), ([[]], []), ([[1]], [0.5])],
    )
    gen = "def halves(xs):\n    for x in xs:\n        yield x / 2 + 1e-12\n"
    assert run_candidate(problem, gen, FAST).fixed
    tup = "def halves(xs):\n    return tuple(x / 2 for x in xs)\n"
    assert run_candidate(problem, tup, FAST).fixed
    off = "def halves(xs):\n    return [x / 2 + 1e-3 for x in xs]\n"
    assert [c.passed for c in run_candidate(problem, off, FAST).cases] == [False, True, False]


def test_expected_outputs_are_not_sent_into_the_box() -> None:
    problem = json_problem("echo", "", [([1], "no"), ([2], "EXPECTED-7c1f")])
    # Searches the box's memory for the second case's expected output. The marker is built
    # at run time (a constant would be in the source) and never bound (traced frames keep their
    # locals in a dict the search would find).
    spy = (
        "import gc\n"
        "def echo(x):\n"
        "    for o in gc.get_objects():\n"
        "        if isinstance(o, (dict, list, tuple)) and ''.join(['EXPECTED-', '7c1f']) in repr(o):\n"
        "            return 'found'\n"
        "    return 'no'\n"
    )
    run = run_candidate(problem, spy, FAST)
    assert reasons(run) == [None, "wrong answer"]


def test_candidate_module_is_importable_by_its_own_name() -> None:
    # dataclasses (with string annotations), enum and pickle look classes up in sys.modules.
    src = (
        "from __future__ import annotations\n"
        "from dataclasses import dataclass\n"
        "@dataclass\n"
        "class Pair:\n"
        "    a: int\n"
        "    b: int\n"
        "def sort_desc(xs):\n"
        "    return [p.a for p in sorted((Pair(x, 0) for x in xs), key=lambda p: -p.a)]\n"
    )
    assert run_candidate(SORT, src, RunnerLimits()).fixed


def test_whole_program_failures() -> None:
    syntax = run_candidate(SORT, "def sort_desc(xs:\n", FAST)
    assert not syntax.syntax_ok and syntax.error.startswith("syntax error: SyntaxError")
    assert all(r == syntax.error for r in reasons(syntax))
    missing = run_candidate(SORT, "def other(xs):\n    return xs\n", FAST)
    assert missing.syntax_ok and missing.error == "missing function sort_desc"
    raising = run_candidate(SORT, "raise ValueError('at import')\n", FAST)
    assert raising.error == "import failed: ValueError: at import" and raising.passed == 0


def test_a_crash_costs_only_its_case() -> None:
    crashy = (
        "import ctypes, os\n"
        "def sort_desc(xs):\n"
        "    if not xs:\n"
        "        ctypes.string_at(0)\n"
        "    if len(xs) == 2:\n"
        "        os._exit(0)\n"
        "    return sorted(xs, reverse=True)\n"
    )
    run = run_candidate(SORT, crashy, FAST)
    assert [c.passed for c in run.cases] == [True, False, False]
    assert reasons(run)[1:] == ["crashed: signal 11", "crashed: exit code 0"]
    assert run.boxes == 2  # one for cases 0-1, a fresh one from case 2


needs_meter = pytest.mark.skipif(
    run_candidate(SORT, SORT.correct_source, FAST).meter is None, reason="no kernel counter here (docs/sandbox.md)"
)


@needs_meter
def test_budget_stops_a_case_and_the_run_goes_on() -> None:
    loops = "def sort_desc(xs):\n    while len(xs) == 3:\n        pass\n    return sorted(xs, reverse=True)\n"
    run = run_candidate(SORT, loops, FAST)
    assert reasons(run) == ["budget exceeded", None, None] and run.boxes == 2
    # Nothing in the box counts: a loop the tracer of old could not see stops all the same.
    tight = run_candidate(SORT, "import sys\nsys.settrace(None)\ndef sort_desc(xs):\n    while True: pass\n", FAST)
    assert reasons(tight) == ["budget exceeded"] * 3 and tight.boxes == 3
    spent = tight.cases[0].cost / 1e9 if tight.meter == "task-clock" else None
    assert spent is None or FAST.budget_floor <= spent < 10 * FAST.budget_floor


@needs_meter
def test_cost_measures_work_in_c_code_too() -> None:
    problem = json_problem("total", "", [([list(range(50))], 1225)])
    builtin = "def total(xs):\n    return sum(xs)\n"
    hidden = "def total(xs):\n    sum(range(1_000_000))\n    return sum(xs)\n"  # one line, much C work
    fast, slow = run_candidate(problem, builtin, FAST), run_candidate(problem, hidden, FAST)
    assert slow.fixed and fast.fixed
    assert slow.cost > 5 * fast.cost and slow.cases[0].cost > 5 * fast.cases[0].cost


NODE = """class Node:
    def __init__(self, value=None, successor=None, successors=[]):
        self.value = value
        self.successor = successor
        self.successors = list(successors)
"""

GRAPH_TESTS = """import pytest

from node import Node

if pytest.use_correct:
    from correct_python_programs.reachable import reachable
else:
    from python_programs.reachable import reachable


def chain(n):
    nodes = [Node(i) for i in range(n)]
    for a, b in zip(nodes, nodes[1:]):
        a.successors = [b]
    return nodes


def test_self():
    a = Node("a")
    assert reachable(a, a)


def test_chain():
    nodes = chain(4)
    assert reachable(nodes[0], nodes[3])
    assert not reachable(nodes[3], nodes[0])


@pytest.mark.parametrize("n,expected", [(1, 1), (3, 3), pytest.param(5, 5, id="five")])
def test_count(n, expected):
    assert len(set(reachable_all(chain(n)[0]))) == expected


def reachable_all(start):
    return [node.value for node in start_and_successors(start)]


def start_and_successors(start):
    out, todo = [], [start]
    while todo:
        node = todo.pop()
        if reachable(start, node):
            out.append(node)
        todo.extend(node.successors)
    return out


def test_raises_on_bad_input():
    with pytest.raises(AttributeError):
        reachable(None, Node())


def test_approx_distance():
    assert 0.1 + 0.2 == pytest.approx(0.3)


@pytest.fixture
def diamond():
    a, b, c, d = (Node(x) for x in "abcd")
    a.successors, b.successors, c.successors = [b, c], [d], [d]
    return a, d


def test_fixture(diamond):
    assert reachable(*diamond)


@pytest.mark.skip(reason="not collected")
def test_skipped():
    raise AssertionError
"""

REACHABLE = """def reachable(start, goal):
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node is goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(node.successors)
    return False
"""
# The buggy search never takes a node off its list: it loops where the goal is unreachable.
BUGGY_REACHABLE = REACHABLE.replace("node = todo.pop()", "node = todo[-1]")
GRAPH = Problem("reachable", BUGGY_REACHABLE, REACHABLE, None, GRAPH_TESTS, {"node.py": NODE})


def test_pytest_style_problem_with_node() -> None:
    correct, buggy = check_problem(GRAPH, FAST)
    ids = ["test_self", "test_chain", "test_count[1-1]", "test_count[3-3]", "test_count[five]"]
    ids += ["test_raises_on_bad_input", "test_approx_distance", "test_fixture"]
    assert [c.case_id for c in correct.cases] == ids
    assert correct.fixed, reasons(correct)
    assert reasons(buggy) == [None, "budget exceeded"] + [None] * 6


def test_pytest_style_failures_have_reasons() -> None:
    wrong = run_candidate(GRAPH, "def reachable(start, goal):\n    return False\n", FAST)
    assert reasons(wrong)[0] == "assert failed (line 20)"
    assert reasons(wrong)[5] == "line 49: DID NOT RAISE builtins.AttributeError"
    missing = run_candidate(GRAPH, "x = 1\n", FAST)
    assert missing.error == "missing function reachable" and missing.total == 8
    broken_tests = "import no_such_module\nfrom python_programs.reachable import reachable\n"
    broken = Problem("reachable", "", REACHABLE, None, broken_tests, {})
    run = run_candidate(broken, REACHABLE, FAST)
    assert run.error.startswith("collecting tests failed: ModuleNotFoundError")
    assert [c.case_id for c in run.cases] == ["<collection>"] and not run.passed


@pytest.mark.parametrize(
    "source",
    [
        "class Yes:\n    def __eq__(self, other):\n        return True\n    __hash__ = None\n"
        "def reachable(start, goal):\n    return Yes()\n",
        "from node import Node\nclass N(Node):\n    pass\ndef reachable(start, goal):\n    return [N()]\n",
        "from node import Node\nNode.__eq__ = lambda self, other: True\ndef reachable(start, goal):\n    return True\n",
        "import builtins\nbuiltins.len = lambda x: 1\ndef reachable(start, goal):\n    return True\n",
    ],
    ids=["always-equal", "node-subclass", "patched-node", "patched-builtin"],
)
def test_pytest_style_cheats_fail(source: str) -> None:
    """A patched class or builtin changes at most the values the box records, which are
    compared outside: the cheat does no better than honestly returning True."""
    run = run_candidate(GRAPH, source, FAST)
    honest = run_candidate(GRAPH, "def reachable(start, goal):\n    return True\n", FAST)
    assert not run.fixed and run.passed <= honest.passed < honest.total
    assert all(c.reason for c in run.cases if not c.passed)


def test_reference_cache_is_keyed_on_every_limit_that_changes_the_reference() -> None:
    """A reference measured under one set of limits is never reused under others that change
    its verdict (or cost): result size, memory, CPU and wall nets, processes, file size."""
    from coral.sandbox.runner import clear_reference_cache, reference

    clear_reference_cache()
    big = json_problem("big", "def big(n):\n    return list(range(n))\n", [([5000], list(range(5000)))])
    assert reference(big, FAST).run.fixed
    assert not reference(big, RunnerLimits(budget_floor=0.05, max_result_bytes=1000)).run.fixed
    memory = json_problem("mem", "def mem(n):\n    return len(bytearray(n))\n", [([300 << 20], 300 << 20)])
    assert reference(memory, FAST).run.fixed
    tight = RunnerLimits(budget_floor=0.05, memory_mb=200)
    assert not reference(memory, tight).run.fixed
    assert not run_candidate(memory, memory.correct_source, tight).fixed  # unsound there: nothing passes
    threads = json_problem("threads", "import threading, time\ndef threads(n):\n    ts = [threading.Thread("
                           "target=time.sleep, args=(0.3,)) for _ in range(n)]\n    [t.start() for t in ts]\n"
                           "    [t.join() for t in ts]\n    return n\n", [([20], 20)])
    assert reference(threads, FAST).run.fixed
    assert not reference(threads, RunnerLimits(budget_floor=0.05, max_processes=4)).run.fixed
    # Limits that shape only the candidates' budgets share the reference.
    assert reference(big, FAST) is reference(big, RunnerLimits(budget_floor=0.2, budget_factor=3.0))


def test_check_problem_runs_the_reference_as_a_candidate_too() -> None:
    """A test shape whose reference passes its own run but that the judge gets wrong for a
    candidate (here the expected value is passed *into* the program, and the candidate's box
    gets the JSON data with expected values blanked) is unsound, with the reason."""
    loader = ("import json\nimport pathlib\n\n\ndef load_json_testcases(name):\n"
              "    with open(pathlib.Path(__file__).parent / '../json_testcases' / f'{name}.json') as f:\n"
              "        return [json.loads(line) for line in f]\n")
    tests = ("import pytest\nfrom load_testdata import load_json_testcases\nfrom python_programs.echo import echo\n\n\n"
             "@pytest.mark.parametrize('input_data,expected', load_json_testcases('echo'))\n"
             "def test_echo(input_data, expected):\n    assert echo(input_data, expected) == expected\n")
    echo = Problem("echo", "def echo(x, want):\n    return x\n", "def echo(x, want):\n    return want\n",
                   (JsonCase(0, [1], 5), JsonCase(1, [2], 6)), tests, {"load_testdata.py": loader})
    correct, buggy = check_problem(echo, FAST)
    assert not correct.fixed and all(c.reason and c.reason.startswith("as a candidate: ") for c in correct.cases)
    assert buggy.passed == 0
    sound, _ = check_problem(SORT, FAST)
    assert sound.fixed
