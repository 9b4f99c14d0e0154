"""Benchmark loader and train/eval split: the mini fixture, the project's set, malformed dirs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO, run_coral

from coral.benchmark.loader import load_benchmark
from coral.benchmark.split import Split, derive_split, load_split, split_for_config
from coral.config import BenchmarkConfig, Config, load_config
from coral.errors import BenchmarkError

MINI = REPO / "tests" / "fixtures" / "mini_bench"
PROJECT = REPO / "data" / "problems"


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    """A writable copy of the mini benchmark."""
    root = tmp_path / "bench"
    shutil.copytree(MINI, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


# ------------------------------------------------------------------ loading


def test_mini_bench_loads_sorted_with_quixbugs_quirks() -> None:
    problems = load_benchmark(MINI)
    names = [p.name for p in problems]
    # node.py in python_programs/ is a support module, not a problem.
    assert names == ["count_bits", "evens", "gcd", "largest_gap", "mean", "reverse_list"]
    by_name = {p.name: p for p in problems}

    gcd = by_name["gcd"]
    assert gcd.buggy_source.startswith("def gcd(a, b):")
    assert "gcd(b, a % b)" in gcd.correct_source
    # The blank third line is skipped; indices count cases, not lines.
    assert gcd.json_cases is not None
    assert [(c.index, c.args, c.expected) for c in gcd.json_cases] == [
        (0, [12, 18], 6), (1, [17, 5], 1), (2, [10, 0], 10), (3, [0, 7], 7)
    ]
    # A JSON problem keeps its pytest file, which runs as written: with its loader.
    assert gcd.pytest_source is not None and set(gcd.support_files) == {"node.py", "load_testdata.py"}

    # A bare (non-list) argument is one positional argument, as QuixBugs' load_testdata does.
    bits = by_name["count_bits"]
    assert bits.json_cases is not None and bits.json_cases[0].args == [127]

    rev = by_name["reverse_list"]
    assert rev.json_cases is None and not rev.uses_json_cases
    assert rev.pytest_source is not None and "from node import Node" in rev.pytest_source
    assert rev.support_files["node.py"] == (MINI / "python_testcases" / "node.py").read_text()
    assert set(rev.support_files) == {"node.py", "load_testdata.py"}


@pytest.mark.skipif(not (PROJECT / "python_programs").is_dir(), reason="data/problems not there")
def test_project_benchmark_loads() -> None:
    problems = load_benchmark(PROJECT)
    names = [p.name for p in problems]
    assert names == sorted(names) and len(names) == len(set(names)) and names
    for problem in problems:
        assert problem.json_cases or problem.pytest_source, problem.name
        if problem.json_cases is None:
            assert "node.py" in problem.support_files or "node" not in problem.pytest_source
    split = load_split(PROJECT)
    assert set(split.train) | set(split.eval) <= set(names)


def test_quixbugs_clone_layout(bench: Path) -> None:
    """QuixBugs keeps node.py and *_test.py next to its programs, node.py in both folders."""
    (bench / "python_programs" / "reverse_list_test.py").write_text("def check(): pass\n")
    (bench / "correct_python_programs" / "reverse_list_test.py").write_text("x = 1\n")
    (bench / "python_testcases" / "node.py").unlink()
    problems = {p.name: p for p in load_benchmark(bench)}
    assert "reverse_list_test" not in problems and "node" not in problems
    node = (bench / "python_programs" / "node.py").read_text()
    assert problems["reverse_list"].support_files["node.py"] == node


def _write(rel: str, text: str | bytes) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = root / rel
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
    return edit


def _remove(*rels: str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        for rel in rels:
            path = root / rel
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return edit


def _remove_all_programs(root: Path) -> None:
    for path in (root / "python_programs").glob("*.py"):
        if path.name != "node.py":
            path.unlink()


# (edit, substrings the one-line message must contain)
MALFORMED: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "no_programs_dir": (_remove("python_programs"), ["missing python_programs/"]),
    "no_correct_dir": (_remove("correct_python_programs"), ["missing correct_python_programs/"]),
    "no_problems": (_remove_all_programs, ["no problem programs"]),
    "no_reference": (_remove("correct_python_programs/mean.py"),
                     ["python_programs/mean.py", "no reference fix"]),
    "bad_json_line": (_write("json_testcases/evens.json", '[[6], [0, 2, 4]]\n\n[[7], [0, 2\n'),
                      ["json_testcases/evens.json", "line 3", "invalid JSON"]),
    "json_too_deep": (_write("json_testcases/gcd.json", "[[1, 2], " + "[" * 100_000 + "]" * 100_000 + "]\n"),
                      ["json_testcases/gcd.json", "line 1", "nested too deeply"]),
    "json_huge_int": (_write("json_testcases/gcd.json", "[[1, 2], 1]\n[[1, 2], " + "9" * 5000 + "]\n"),
                      ["json_testcases/gcd.json", "line 2", "digits"]),
    "json_not_pair": (_write("json_testcases/gcd.json", "[[1, 2], 1]\n[1, 2, 3]\n"),
                      ["json_testcases/gcd.json", "line 2", "[args, expected]"]),
    "json_empty": (_write("json_testcases/mean.json", "\n\n"),
                   ["json_testcases/mean.json", "no test cases"]),
    "no_tests": (_remove("json_testcases/gcd.json", "python_testcases/test_gcd.py"),
                 ["python_programs/gcd.py", "no tests"]),
    "not_utf8": (_write("python_programs/evens.py", b"def evens(n):\n    return '\xff'\n"),
                 ["python_programs/evens.py", "not UTF-8"]),
    "syntax_error": (_write("correct_python_programs/mean.py", "def mean(xs)\n    return 1\n"),
                     ["correct_python_programs/mean.py", "line 1", "syntax error"]),
    "nul_byte": (_write("python_programs/gcd.py", "def gcd(a, b):\n    return a\x00\n"),
                 ["python_programs/gcd.py", "null bytes"]),
    "too_deep": (_write("correct_python_programs/gcd.py", "def gcd(a, b):\n    return " + "~" * 100_000 + "a\n"),
                 ["correct_python_programs/gcd.py", "nested too deeply"]),
    "wrong_function": (_write("python_programs/mean.py", "def average(xs):\n    return 0\n"),
                       ["python_programs/mean.py", "mean()"]),
    "missing_node": (_remove("python_testcases/node.py", "python_programs/node.py"),
                     ["test_reverse_list.py", "imports node"]),
    "bad_module_name": (_write("python_programs/bad-name.py", "x = 1\n"),
                        ["bad-name.py", "not a valid Python module name"]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_benchmark_one_clear_line(bench: Path, case: str) -> None:
    edit, needles = MALFORMED[case]
    edit(bench)
    with pytest.raises(BenchmarkError) as info:
        load_benchmark(bench)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match="benchmark directory not found"):
        load_benchmark(tmp_path / "nope")


@pytest.mark.parametrize("case", ["no_reference", "bad_json_line", "not_utf8", "missing_node", "too_deep",
                                  "json_too_deep"])
def test_malformed_benchmark_through_cli(bench: Path, case: str) -> None:
    edit, needles = MALFORMED[case]
    edit(bench)
    result = run_coral("bench", "check", str(bench), "--json", timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coral: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


# ------------------------------------------------------------------ split


def test_split_file_is_read_and_sorted() -> None:
    assert load_split(MINI) == Split(
        train=["count_bits", "evens", "largest_gap"], eval=["gcd", "mean", "reverse_list"]
    )


BAD_SPLITS = {
    "overlap": ({"train": ["gcd", "mean"], "eval": ["mean"]}, "'mean' is in both"),
    "unknown": ({"train": ["gcd"], "eval": ["median"]}, "unknown problem 'median'"),
    "duplicate": ({"train": ["gcd", "gcd"], "eval": ["mean"]}, "'gcd' more than once"),
    "missing_key": ({"train": ["gcd"]}, 'keys "train" and "eval"'),
    "extra_key": ({"train": ["gcd"], "eval": ["mean"], "test": []}, 'keys "train" and "eval"'),
    "empty": ({"train": [], "eval": ["mean"]}, '"train" is empty'),
    "not_names": ({"train": ["gcd", 3], "eval": ["mean"]}, "list of problem names"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPLITS))
def test_bad_split_file(bench: Path, case: str) -> None:
    data, needle = BAD_SPLITS[case]
    (bench / "split.json").write_text(json.dumps(data))
    with pytest.raises(BenchmarkError) as info:
        load_split(bench)
    assert needle in str(info.value) and "split.json" in str(info.value)


def test_split_file_invalid_json_and_explicit_missing(bench: Path) -> None:
    (bench / "split.json").write_text('{"train": ["gcd"],\n "eval": [}\n')
    with pytest.raises(BenchmarkError, match=r"split.json: line 2: invalid JSON"):
        load_split(bench)
    with pytest.raises(BenchmarkError, match="split file not found"):
        load_split(bench, bench / "other.json")
    (bench / "split.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BenchmarkError, match=r"split.json: JSON nested too deeply to read$"):
        load_split(bench)


def test_derived_split_when_no_split_file(bench: Path) -> None:
    (bench / "split.json").unlink()
    split = load_split(bench)
    names = [p.name for p in load_benchmark(bench)]
    assert sorted(split.train + split.eval) == names
    assert len(split.eval) == 3 and not set(split.train) & set(split.eval)
    # Fixed forever for these names (documented in docs/benchmark.md); order of input ignored.
    assert split == derive_split(reversed(names))
    assert split == Split(train=["count_bits", "evens", "gcd"],
                          eval=["largest_gap", "mean", "reverse_list"])


def test_derived_split_is_the_same_in_any_process() -> None:
    """No `hash()`: another interpreter with another hash seed derives the same split."""
    names = [f"problem_{i}" for i in range(40)]
    code = (
        "import json, sys; from coral.benchmark.split import derive_split; "
        "print(json.dumps(derive_split(json.loads(sys.argv[1])).as_dict()))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(names)], env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(out) == derive_split(names).as_dict()
    assert len(derive_split(names).eval) == 20


def test_derived_split_needs_two_problems() -> None:
    with pytest.raises(BenchmarkError, match="need at least 2"):
        derive_split(["only"])
    assert derive_split(["a", "b"]).train and derive_split(["a", "b"]).eval


def test_split_for_config(bench: Path, tmp_path: Path) -> None:
    assert split_for_config(Config(benchmark=BenchmarkConfig(root=MINI))) == load_split(MINI)
    # An explicit split path in a config resolves relative to the config file.
    (tmp_path / "my_split.json").write_text(json.dumps({"train": ["gcd"], "eval": ["mean"]}))
    config_path = tmp_path / "c.yaml"
    config_path.write_text("benchmark:\n  root: bench\n  split: my_split.json\n")
    assert split_for_config(load_config(config_path)) == Split(train=["gcd"], eval=["mean"])
