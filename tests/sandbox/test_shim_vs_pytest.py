"""The harness's pytest stand-in, and the verdicts decided outside the box, against real pytest.

Real pytest runs the bundled pytest-style problems (graphs, linked lists), some of its tests
over JSON data, and a fixture file
covering marks, parametrize, fixtures, raises and approx, on the buggy program and on the
reference; coral's runner runs the same programs. Every test must get the same verdict (pass,
fail, or not a case: skipped), test by test.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import REPO

from coral.benchmark.loader import load_benchmark
from coral.sandbox.runner import RunnerLimits, reference, run_candidate

BUNDLED = REPO / "data" / "problems"
LIMITS = RunnerLimits(budget_floor=0.2)

SHIM_TESTS = '''import pytest

if pytest.use_correct:
    from correct_python_programs.shim import shim
else:
    from python_programs.shim import shim


@pytest.fixture
def base():
    return 10


@pytest.fixture
def doubled(base):
    yield base * 2


@pytest.fixture(autouse=True)
def around():
    yield


def test_plain():
    assert shim(2) == 4


def test_fixture(doubled):
    assert shim(doubled) == 40


@pytest.mark.parametrize("x,expected", [(1, 2), (3, 6), pytest.param(5, 10, id="five"),
                                        pytest.param(7, 0, marks=pytest.mark.skip)])
def test_param(x, expected):
    assert shim(x) == expected


@pytest.mark.parametrize("x", [0, 3], ids=["zero", "three"])
@pytest.mark.parametrize("y", [1, 2])
def test_stacked(x, y):
    assert shim(x) + y == 2 * x + y


@pytest.mark.skip(reason="never")
def test_skipped():
    assert shim(1) == 99


@pytest.mark.skipif(True, reason="always")
def test_skipif_true():
    assert shim(1) == 99


@pytest.mark.skipif(False, reason="never")
def test_skipif_false():
    assert shim(1) != 3


@pytest.mark.slow
def test_custom_mark():
    assert shim(0) == 0


def test_skip_at_run_time():
    if shim(1) > 0:
        pytest.skip("decided while running")
    assert shim(1) == 99


def test_raises():
    with pytest.raises(ValueError, match="negative"):
        shim(-1)


def test_raises_other_type():
    with pytest.raises(TypeError):
        shim(-1)


def test_raises_not_raised():
    with pytest.raises(ValueError):
        shim(1)


def test_approx_default():
    assert shim(0.1) == pytest.approx(0.2)


def test_approx_rel():
    assert shim(0.1000001) == pytest.approx(0.2, rel=1e-9)


def test_approx_abs_only():
    assert shim(1.0000001) == pytest.approx(2.0, abs=1e-3)


def test_approx_abs_ignores_rel():
    assert shim(1000.0001) == pytest.approx(2000.0, abs=1e-9)


def test_approx_both():
    assert shim(1000.0001) == pytest.approx(2000.0, rel=1e-6, abs=1e-9)


def test_approx_sequence():
    assert [shim(0.1), shim(0.2)] == pytest.approx([0.2, 0.4])


def test_approx_mapping():
    assert {"a": shim(0.3)} == pytest.approx({"a": 0.6})


def test_approx_reversed():
    assert pytest.approx(0.6) == shim(0.3)


def test_not():
    assert not shim(0)


def test_in():
    assert shim(2) in [4, 5]


def test_is_none():
    assert shim(None) is None


def test_ordering():
    assert shim(3) > 5
'''
SHIM = '''def shim(x):
    if x is None:
        return None
    if x < 0:
        raise ValueError("negative input")
    return x * 2
'''
BUGGY_SHIM = '''def shim(x):
    if x is None:
        return 0
    if x < 0:
        raise TypeError("negative input")
    return x * 2 + (0.001 if isinstance(x, float) else x == 3)
'''


def pytest_verdicts(root: Path, names: list[str], correct: bool) -> dict[str, dict[str, bool]]:
    """{problem: {test id: passed}} from real pytest; skipped tests are left out."""
    report = root / f"report-{correct}.xml"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--case-timeout", "2",
            f"--junitxml={report}", *(f"python_testcases/test_{n}.py" for n in names)]
    if correct:
        argv.append("--correct")
    subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=600, check=False)
    out: dict[str, dict[str, bool]] = {n: {} for n in names}
    for case in ET.parse(report).getroot().iter("testcase"):
        problem = case.get("classname", "").rsplit(".", 1)[-1].removeprefix("test_")
        if case.find("skipped") is not None:
            continue
        failed = case.find("failure") is not None or case.find("error") is not None
        out[problem][case.get("name", "")] = not failed
    return out


def harness_verdicts(root: Path, names: list[str], correct: bool) -> dict[str, dict[str, bool]]:
    problems = {p.name: p for p in load_benchmark(root)}
    out = {}
    for name in names:
        problem = problems[name]
        run = reference(problem, LIMITS).run if correct else run_candidate(problem, problem.buggy_source, LIMITS)
        out[name] = {c.case_id: c.passed for c in run.cases}
    return out


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("shim") / "bench"
    shutil.copytree(BUNDLED, root, ignore=shutil.ignore_patterns("__pycache__", "split.json"))
    (root / "python_programs" / "shim.py").write_text(BUGGY_SHIM)
    (root / "correct_python_programs" / "shim.py").write_text(SHIM)
    (root / "python_testcases" / "test_shim.py").write_text(SHIM_TESTS)
    names = sorted(p.name for p in load_benchmark(root) if p.json_cases is None)
    assert "shim" in names and len(names) >= 8
    # JSON-data tests too: the candidate's box calls the function directly for these.
    names += ["kth_smallest", "knapsack", "powerset", "rpn_eval", "sqrt_newton"]
    return root, names


@pytest.mark.parametrize("correct", [False, True], ids=["buggy", "reference"])
def test_same_verdicts_as_pytest(bench: tuple[Path, list[str]], correct: bool) -> None:
    root, names = bench
    real, ours = pytest_verdicts(root, names, correct), harness_verdicts(root, names, correct)
    for name in names:
        assert ours[name] == real[name], name
    # 30 tests: 3 skipped by marks (skip, skipif, a skipped param), 1 at run time.
    assert len(real["shim"]) == 26
    if not correct:  # the buggy shim fails where only the approx and raises rules tell it apart
        failing = {k for k, ok in ours["shim"].items() if not ok}
        assert {"test_raises", "test_approx_rel", "test_approx_default", "test_is_none"} <= failing
