"""Synthetic bugs for the tiny model: mutate.py's classes, one line, a program that still parses,
reproducible."""

from __future__ import annotations

import ast
import difflib

import pytest

from coral.benchmark.mutations import BUG_CLASSES
from coral.model.corpus import inject_bug
from coral.rng import stream

FUNCTIONS = [
    "def f(xs, n):\n    total = 0\n    for i in range(1, n):\n        if xs[i] < total and i != 2:\n"
    "            total += xs[i] * 2\n    return total - 1\n",
    "def g(a, b):\n    while b:\n        a, b = b, a % b\n    return a\n",
    "def h(items):\n    seen = set()\n    out = []\n    for x in items:\n        if not x in seen:\n"
    "            seen.add(x)\n            out.append(sorted(x[1:3]))\n    return out\n",
    "def k(node, key):\n    if node is None or not key:\n        return None\n"
    "    flag = True\n    return node.value[key] + node.offset + 1\n",
]


def _changed_lines(before: str, after: str) -> list[str]:
    return [d for d in difflib.ndiff(before.splitlines(), after.splitlines()) if d[:1] in "+-"]


@pytest.mark.parametrize("source", FUNCTIONS)
def test_one_line_one_change(source: str) -> None:
    for seed in range(25):
        result = inject_bug(source, stream(seed, "test-bugs"))
        assert result is not None
        buggy, bug = result
        changed = _changed_lines(source, buggy)
        assert source.splitlines()[bug.line - 1] == bug.before
        if bug.kind == "missing_line":
            assert changed == ["- " + bug.before] and bug.after == ""
        else:
            assert changed == ["- " + bug.before, "+ " + bug.after]
        assert ast.dump(ast.parse(buggy)) != ast.dump(ast.parse(source))


def test_deterministic_per_stream() -> None:
    for source in FUNCTIONS:
        first = [inject_bug(source, stream(7, "bugs", genome_id=str(i))) for i in range(10)]
        again = [inject_bug(source, stream(7, "bugs", genome_id=str(i))) for i in range(10)]
        assert first == again
        assert len({r[0] for r in first if r}) > 1  # different streams give different bugs


def test_classes_are_mutates_and_spread() -> None:
    drawn = {inject_bug(s, stream(i, "kinds"))[1].kind for s in FUNCTIONS for i in range(60)}
    assert drawn <= set(BUG_CLASSES)
    # A class is drawn uniformly among those a function offers, so most classes show up.
    assert len(drawn) >= 12, drawn


def test_no_mutation_means_none_and_fstrings_stay() -> None:
    assert inject_bug("def f():\n    pass\n", stream(0, "none")) is None
    # Nothing inside f-strings is touched (positions there are unreliable before 3.12): that
    # line can only be deleted.
    source = "def f(x):\n    y = f'{x + 2}'\n    return x\n"
    bugs = [inject_bug(source, stream(i, "fstring"))[1] for i in range(30)]
    assert all(b.kind == "missing_line" for b in bugs if b.line == 2)
    assert any(b.line == 3 for b in bugs)


def test_withheld_classes_are_never_drawn() -> None:
    """A build that withholds classes (TinySpec.withheld_classes) never trains on them; every
    class allowed draws exactly what the one-argument call draws (the committed recipe)."""
    withheld = {"comparison_operator", "wrong_variable", "return_value"}
    allowed = tuple(c for c in BUG_CLASSES if c not in withheld)
    drawn = [inject_bug(s, stream(i, "kinds"), allowed) for s in FUNCTIONS for i in range(60)]
    kinds = {r[1].kind for r in drawn if r}
    assert kinds and not kinds & withheld
    assert len(kinds) >= 9, kinds  # the other classes still come up
    for s in FUNCTIONS:
        for i in range(10):
            assert inject_bug(s, stream(i, "same"), BUG_CLASSES) == inject_bug(s, stream(i, "same"))
    # A function offering only withheld classes gives no example at all.
    assert inject_bug("def f(a, b):\n    return a < b\n", stream(0, "x"), ("comparison_operator",)) is not None
    assert inject_bug("def f(a, b):\n    return a < b\n", stream(0, "x"), ("slice_bound",)) is None
