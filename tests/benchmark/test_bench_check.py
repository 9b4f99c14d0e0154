"""`coral bench check`: JSON shape, soundness of the mini benchmark, unsound and bad input."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO, run_coral

from coral.benchmark.loader import load_benchmark
from coral.cli import main

MINI = REPO / "tests" / "fixtures" / "mini_bench"
# The buggy count_bits never terminates on three cases: each stops at the per-case budget's
# floor (the references cost far less); a low ceiling also bounds the references.
FAST = ("--budget-ceiling", "5")


def test_mini_bench_is_sound_json_shape() -> None:
    result = run_coral("bench", "check", str(MINI), "--json", *FAST, timeout=240)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert list(data) == ["problems"]
    totals = {p.name: len(p.json_cases) if p.json_cases else 3 for p in load_benchmark(MINI)}
    assert [p["name"] for p in data["problems"]] == sorted(totals)
    for entry in data["problems"]:
        assert set(entry) == {"name", "correct", "buggy"}
        for side in ("correct", "buggy"):
            assert set(entry[side]) == {"passed", "total"}
            assert all(type(v) is int for v in entry[side].values())
        assert entry["correct"] == {"passed": totals[entry["name"]], "total": totals[entry["name"]]}
        assert entry["buggy"]["total"] == totals[entry["name"]]
    # What each buggy program gets right (non-termination, recursion, generator, float...).
    assert {p["name"]: p["buggy"]["passed"] for p in data["problems"]} == {
        "count_bits": 1, "evens": 1, "gcd": 1, "largest_gap": 2, "mean": 1, "reverse_list": 1
    }
    # Only progress on stderr ("checked N/M problems", the last always), no error.
    assert _progress(result.stderr) == ["checked 6/6 problems"]


def _progress(stderr: str) -> list[str]:
    lines = stderr.strip().splitlines()
    assert all(re.fullmatch(r"checked \d+/\d+ problems", line) for line in lines), lines
    return lines[-1:]


def _two_problem_copy(tmp_path: Path) -> Path:
    root = tmp_path / "bench"
    shutil.copytree(MINI, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "split.json").unlink()
    for folder in ("python_programs", "correct_python_programs", "json_testcases"):
        for path in (root / folder).iterdir():
            if path.stem not in {"evens", "mean", "node"}:
                path.unlink()
    return root


def test_unsound_benchmark_exits_1_and_names_the_problems(tmp_path: Path) -> None:
    root = _two_problem_copy(tmp_path)
    # A reference that fails cases, and a "buggy" program that is really the fix.
    shutil.copy(root / "python_programs" / "mean.py", root / "correct_python_programs" / "mean.py")
    shutil.copy(root / "correct_python_programs" / "evens.py", root / "python_programs" / "evens.py")

    text = run_coral("bench", "check", str(root), *FAST, timeout=240)
    assert text.returncode == 1
    assert "coral: unsound: evens: buggy program passes every case" in text.stdout
    assert ("coral: unsound: mean: reference fails case-0 (wrong answer), case-1 (wrong answer), "
            "case-3 (ZeroDivisionError: float division by zero)") in text.stdout
    assert "2 problems: 0 sound, 2 unsound" in text.stdout
    rows = {line.split()[0]: line.split()[1:] for line in text.stdout.splitlines()[1:3]}
    assert rows == {"evens": ["3/3", "3/3", "UNSOUND"], "mean": ["1/4", "1/4", "UNSOUND"]}

    as_json = run_coral("bench", "check", str(root), "--json", *FAST, timeout=240)
    assert as_json.returncode == 1
    assert [p["name"] for p in json.loads(as_json.stdout)["problems"]] == ["evens", "mean"]
    reasons = [line for line in as_json.stderr.strip().splitlines() if not line.startswith("checked ")]
    assert len(reasons) == 2 and all(r.startswith("coral: unsound: ") for r in reasons)


def test_sound_table_and_summary(tmp_path: Path) -> None:
    root = _two_problem_copy(tmp_path)
    result = run_coral("bench", "check", str(root), "--jobs", "1", *FAST, timeout=240)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["problem", "reference", "buggy", "verdict"]
    assert lines[1].split() == ["evens", "3/3", "1/3", "ok"]
    assert lines[2].split() == ["mean", "4/4", "1/4", "ok"]
    assert lines[3] == ("2 problems: 2 sound, 0 unsound; references pass 7/7 cases, "
                        "buggy programs 2/7")


def test_missing_directory_is_one_line(tmp_path: Path) -> None:
    result = run_coral("bench", "check", str(tmp_path / "nope"), timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == f"coral: error: benchmark directory not found: {tmp_path / 'nope'}"


def test_split_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "split", str(MINI), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "train": ["count_bits", "evens", "largest_gap"], "eval": ["gcd", "mean", "reverse_list"]
    }
    assert main(["bench", "split", str(MINI)]) == 0
    assert capsys.readouterr().out == (
        "train (3): count_bits evens largest_gap\neval (3): gcd mean reverse_list\n"
    )


def test_bundled_benchmark_is_sound() -> None:
    """The issue's acceptance check on the shipped set: every reference passes all its cases and
    every buggy program fails at least one (exit 0 says the same)."""
    bundled = REPO / "data" / "problems"
    result = run_coral("bench", "check", str(bundled), "--json", *FAST, timeout=600)
    assert result.returncode == 0, result.stderr
    problems = json.loads(result.stdout)["problems"]
    assert len(problems) == len(load_benchmark(bundled)) >= 30
    for entry in problems:
        assert entry["correct"]["passed"] == entry["correct"]["total"] >= 5, entry
        assert entry["buggy"]["passed"] < entry["buggy"]["total"], entry


def test_tests_that_cannot_be_recorded_are_reported(tmp_path: Path) -> None:
    """A test whose expected value cannot be kept out of the candidate's box is not trusted:
    the problem is unsound, with the reason."""
    root = _two_problem_copy(tmp_path)
    (root / "python_testcases" / "test_mean.py").write_text(
        "import pytest\nfrom python_programs.mean import mean\n\n\n"
        "def test_between():\n    assert 1 < mean([1, 2, 3]) < 3\n"
    )
    result = run_coral("bench", "check", str(root), *FAST, timeout=240)
    assert result.returncode == 1
    assert ("coral: unsound: mean: tests cannot be recorded: cannot separate the expected value in the "
            "assert at line 6") in result.stdout
    assert "2 problems: 1 sound, 1 unsound" in result.stdout
