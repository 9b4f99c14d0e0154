"""Synthetic bug injection: one line, one change, a program that still parses, reproducible."""

from __future__ import annotations

import ast
import difflib

import pytest

from coral.model.corpus import BUG_KINDS, bug_sites, inject_bug
from coral.rng import stream

FUNCTIONS = [
    "def f(xs, n):\n    total = 0\n    for i in range(1, n):\n        if xs[i] < total and i != 2:\n"
    "            total += xs[i] * 2\n    return total - 1\n",
    "def g(a, b):\n    while b:\n        a, b = b, a % b\n    return a\n",
    "def h(items):\n    seen = set()\n    out = []\n    for x in items:\n        if x not in seen:\n"
    "            seen.add(x)\n            out.append(x)\n    return out\n",
    "def k(node, key):\n    if node is None or not key:\n        return None\n"
    "    return node.value[key] + node.offset\n",
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
        assert len(changed) == 2, changed  # one line out, one line in
        assert changed[0][2:] == bug.before and changed[1][2:] == bug.after
        assert source.splitlines()[bug.line - 1] == bug.before
        assert ast.dump(ast.parse(buggy)) != ast.dump(ast.parse(source))


def test_deterministic_per_stream() -> None:
    for source in FUNCTIONS:
        first = [inject_bug(source, stream(7, "bugs", genome_id=str(i))) for i in range(10)]
        again = [inject_bug(source, stream(7, "bugs", genome_id=str(i))) for i in range(10)]
        assert first == again
        assert len({r[0] for r in first if r}) > 1  # different streams give different bugs


def test_every_kind_occurs() -> None:
    kinds = {site.kind for source in FUNCTIONS for site in bug_sites(source)}
    assert kinds == set(BUG_KINDS)
    drawn = {inject_bug(s, stream(i, "kinds"))[1].kind for s in FUNCTIONS for i in range(40)}
    assert drawn == set(BUG_KINDS)


def test_exact_sites() -> None:
    source = "def f(a, b):\n    return (a) <= b\n"
    (site,) = [s for s in bug_sites(source) if s.kind == "comparison"]
    assert source.splitlines()[1].encode()[site.start : site.end] == b"<="
    spaced = "def f(a, b):\n    return a is  not b\n"
    (site,) = [s for s in bug_sites(spaced) if s.kind == "comparison"]
    assert spaced.splitlines()[1].encode()[site.start : site.end] == b"is  not"


def test_no_site_means_none() -> None:
    assert inject_bug("def f():\n    pass\n", stream(0, "none")) is None
    # Nothing inside f-strings is touched (positions there are unreliable before 3.12).
    assert inject_bug("def f():\n    return f'{1 + 2}'\n", stream(0, "none")) is None
