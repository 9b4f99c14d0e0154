"""coral.sandbox.record: splitting tests (what is unrecordable, and why) and judging outside."""

from __future__ import annotations

import itertools
import math

import pytest

from coral.sandbox import verdicts
from coral.sandbox.record import Unrecordable, split_tests
from coral.sandbox.verdicts import Approx, Obj

HEAD = "import pytest\nfrom python_programs.f import f\n\n"


@pytest.mark.parametrize(
    "body, why",
    [
        ("def test_a():\n    assert 0 < f(1) < 3\n", "cannot separate the expected value in the assert at line 5"),
        ("def check(x, want):\n    assert f(x) == want\n\ndef test_a():\n    check(1, 2)\n",
         "the expected value of the assert at line 5 comes from check's parameter want"),
        ("class TestF:\n    def test_a(self):\n        assert f(1) == 2\n", "test classes are not supported"),
        ("def test_a():\n    pytest.raises(ValueError, f, -1)\n", "pytest.raises outside a with statement"),
        ("CASES = [(1, 2)]\n\n@pytest.mark.parametrize('x,want', CASES)\ndef test_a(x, want):\n"
         "    assert f(x) == want\n", "parametrize values of test_a come from an expression"),
        ("assert f(1) == 2\n", "an assert outside a function (line 4)"),
        ("def test_a():\n    g = lambda: f(1)\n    def inner():\n        assert g() == 2\n    inner()\n",
         "an assert inside a nested function"),
        ("ROWS = [(1, 2)]\n\ndef test_a():\n    for r in ROWS:\n        assert f(r[0]) == r[1]\n",
         "the expected value of the assert at line 8 reads r (bound at line 7), which the candidate's copy still"),
        ("W = 2\n\ndef test_a():\n    assert f(1) == globals()['W']\n", "reads names dynamically (globals)"),
        ("import sys\n\ndef test_a():\n    assert f(1) == getattr(sys.modules[__name__], 'W')\n",
         "reads names dynamically (.modules)"),
    ],
    ids=["chained", "helper-parameter", "class", "raises-call", "parametrize-name", "module-assert", "nested",
         "indexed-row", "globals", "sys-modules"],
)
def test_unrecordable_tests_say_why(body: str, why: str) -> None:
    with pytest.raises(Unrecordable, match=why.replace("(", r"\(").replace(")", r"\)")):
        split_tests(HEAD + body, "f")


def test_what_the_candidates_copy_keeps_and_drops() -> None:
    source = HEAD + (
        "EXPECTED = {'a': 1}\n\n"
        "def test_a():\n"
        "    '''Expected output: 12345'''\n"
        "    want = dict(EXPECTED)\n"
        "    got = f([3, 4])\n"
        "    assert got == want\n"
        "    assert not f([])\n"
        "    with pytest.raises(ValueError, match='neg'):\n"
        "        f(-1)\n\n"
        "@pytest.mark.parametrize('x,want', [(1, 'one'), pytest.param(2, 'two', id='two!')], ids=['x1', 'x2'])\n"
        "def test_b(x, want):\n"
        "    assert want == f(x)\n"
    )
    rec = split_tests(source, "f")
    cand = rec.candidate_source
    for gone in ("EXPECTED", "12345", "'one'", "'two'", "two!", "x1", "ValueError", "neg"):
        assert gone not in cand, gone
    for kept in ("got = f([3, 4])", "_coral_record(0, got)", "_coral_record(1, f([]))", "with _coral_raises(2):",
                 "_coral_record(3, f(x))", "(1, None)", "pytest.param(2, None)"):
        assert kept in cand, kept
    assert "_coral_record(3, want, f(x))" in rec.reference_source and "'one'" in rec.reference_source
    assert [(s.kind, s.op, s.cand) for s in rec.sites.values()] == [
        ("cmp", "==", (0,)), ("truth", "", (0,)), ("raises", "", ()), ("cmp", "==", (1,))]
    assert rec.sites[1].negate


VALUES = [0.0, 1.0, 1.000001, 1.0000011, 1.001, 2.0, 1e-13, -1.0, 1e6, 1e6 + 1, True, False, 1, 0]


@pytest.mark.parametrize("rel, abs_", [(None, None), (1e-3, None), (None, 1e-3), (1e-9, 1e-2), (None, 0.0)])
def test_approx_is_pytests(rel: float | None, abs_: float | None) -> None:
    for expected, actual in itertools.product(VALUES, VALUES):
        want = pytest.approx(expected, rel=rel, abs=abs_) == actual
        assert verdicts.approx_equal(Approx(expected, rel, abs_), actual) == want, (expected, actual)
    for expected, actual in [([1.0, 2.0], [1.0000001, 2.0]), ([1.0], (1.0,)), ({"a": 1.0}, {"a": 1.0000001}),
                             ({"a": 1.0}, {"b": 1.0}), ([1.0, 2.0], [1.0]), (math.inf, math.inf), (math.inf, 1e308)]:
        want = pytest.approx(expected, rel=rel, abs=abs_) == actual
        assert verdicts.approx_equal(Approx(expected, rel, abs_), actual) == want, (expected, actual)


def test_decoding_and_comparing() -> None:
    value = verdicts.decode({"$d": [[{"$t": [0, 1]}, 3], [{"$t": [1, 1]}, {"$f": [1, 2]}]]})
    assert value == {(0, 1): 3, (1, 1): frozenset({1, 2})}
    assert verdicts.holds("is", Obj(2), Obj(2)) and not verdicts.holds("is", Obj(2), Obj(3))
    assert verdicts.holds("is", None, None) and not verdicts.holds("is", 0, False)
    assert verdicts.holds("in", 2, [1, 2]) and verdicts.holds("not in", "x", {"a": 1})
    assert not verdicts.holds("<", 1, "a")  # TypeError in the box would fail the test too
    bad = verdicts.decode({"$x": "a Yes, not plain data"})
    assert isinstance(bad, verdicts.Bad) and not verdicts.holds("==", bad, bad) and not verdicts.holds("!=", 1, bad)
    assert isinstance(verdicts.decode({"no": "tag"}), verdicts.Bad)
    assert isinstance(verdicts.decode({"$t": [{"$s": [[1]]}]}), verdicts.Bad)  # an unhashable set element


def test_parameters_carrying_expected_values_go_with_their_defaults() -> None:
    source = HEAD + (
        "@pytest.fixture\ndef want():\n    return 'EXP-F'.lower()\n\n"
        "def test_a(x=1, other='EXP-D'.lower(), y=3, *, z=4, kw='EXP-K'.lower()):\n"
        "    assert f(x + y + z) == other + kw\n\n"
        "def test_b(want):\n    assert f(0) == want\n"
    )
    cand = split_tests(source, "f").candidate_source
    assert "EXP" not in cand and "def want" not in cand, cand
    assert "def test_a(x=1, y=3, *, z=4):" in cand and "def test_b():" in cand, cand
