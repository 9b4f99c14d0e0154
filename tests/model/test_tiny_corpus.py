"""The tiny model's corpus: training split in, evaluation split and named problems out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coral.errors import BenchmarkError
from coral.model.corpus import QUIXBUGS_NAMES, build_corpus, extract_functions, normalise_name

EVAL_BUGGY = "def held_out(xs):\n    return sorted(xs)[1]\n"
EVAL_FIXED = "def held_out(xs):\n    return sorted(xs)[0]\n"
TRAIN_BUGGY = "def practice(a, b):\n    return a - b\n"
TRAIN_FIXED = "def practice(a, b):\n    return a + b\n"

# A fake standard library: one module with functions named like problems, and ordinary ones.
STDLIB_MODULE = '''
def gcd(a, b):
    while b:
        a, b = b, a % b
    return a

def _Bitcount(n):
    count = 0
    while n:
        n &= n - 1
        count += 1
    return count

def held_out(xs):
    first = sorted(xs)
    return first[0]

def practice(a, b):
    total = a + b
    return total

def ordinary(values):
    """Short docstrings stay."""
    total = 0
    for v in values:
        total += v
    return total

def documented(x):
    """A long docstring

    goes away, because it would only spend tokens
    that the tiny model needs for code:
    more than six lines
    of text
    is more than
    the bundled problems have.
    """
    y = x * 2
    return y + 1
'''


def _problem(root: Path, name: str, buggy: str, fixed: str) -> None:
    (root / "python_programs" / f"{name}.py").write_text(buggy)
    (root / "correct_python_programs" / f"{name}.py").write_text(fixed)
    (root / "json_testcases" / f"{name}.json").write_text("[[[1, 2]], 1]\n")


@pytest.fixture()
def fake(tmp_path: Path) -> tuple[Path, Path]:
    problems = tmp_path / "problems"
    for folder in ("python_programs", "correct_python_programs", "json_testcases"):
        (problems / folder).mkdir(parents=True)
    _problem(problems, "held_out", EVAL_BUGGY, EVAL_FIXED)
    # Evaluation programs must never be opened: these would fail to decode if they were.
    for folder, text in (("python_programs", EVAL_BUGGY), ("correct_python_programs", EVAL_FIXED)):
        (problems / folder / "held_out.py").write_bytes(text.encode() + b"\xff\n")
    _problem(problems, "practice", TRAIN_BUGGY, TRAIN_FIXED)
    (problems / "split.json").write_text(json.dumps({"train": ["practice"], "eval": ["held_out"]}))
    stdlib = tmp_path / "stdlib"
    (stdlib / "pkg").mkdir(parents=True)
    (stdlib / "pkg" / "mod.py").write_text(STDLIB_MODULE)
    (stdlib / "test").mkdir()
    (stdlib / "test" / "test_mod.py").write_text("def in_a_test_folder(x):\n    y = x\n    return y\n")
    return problems, stdlib


def test_eval_split_and_problem_names_never_enter(fake: tuple[Path, Path]) -> None:
    problems, stdlib = fake
    corpus = build_corpus(problems, stdlib_root=stdlib)
    names = {(f.name, f.origin.split(":")[0]) for f in corpus.functions}
    assert names == {("ordinary", "stdlib/pkg/mod.py"), ("documented", "stdlib/pkg/mod.py"),
                     ("practice", "problems/practice")}  # fmt: skip
    texts = [f.source for f in corpus.functions] + [p.buggy + p.fixed for p in corpus.pairs]
    assert not any("held_out" in t or "sorted(xs)" in t for t in texts)
    assert [p.name for p in corpus.pairs] == ["practice"]
    assert corpus.pairs[0].fixed == TRAIN_FIXED
    labels = [label for label, _ in corpus.files]
    assert "problems/correct_python_programs/practice.py" in labels
    assert not any("held_out" in label for label in labels)
    assert corpus.eval_names == ("held_out",) and corpus.train_names == ("practice",)
    assert {"held_out", "practice", "gcd", "bitcount"} <= corpus.excluded_names


def test_docstrings_and_length_limits() -> None:
    found = {f.name: f.source for f in extract_functions(STDLIB_MODULE, "m.py", frozenset(), 25, 1000)}
    assert '"""Short docstrings stay."""' in found["ordinary"]
    assert "docstring" not in found["documented"] and "y = x * 2" in found["documented"]
    assert "gcd" in found  # nothing excluded when no names are given
    short = extract_functions(STDLIB_MODULE, "m.py", frozenset(), 3, 1000)
    assert all(f.source.count("\n") < 3 for f in short) and short
    blank = extract_functions("def f(x):\n    y = x\n\n    return y   \n", "m.py", frozenset(), 25, 1000)
    assert blank[0].source == "def f(x):\n    y = x\n\n    return y"  # blank kept, trailing spaces not


def test_fingerprint_follows_content(fake: tuple[Path, Path]) -> None:
    problems, stdlib = fake
    before = build_corpus(problems, stdlib_root=stdlib).fingerprint
    assert build_corpus(problems, stdlib_root=stdlib).fingerprint == before
    (stdlib / "pkg" / "mod.py").write_text(STDLIB_MODULE + "\n# edited\n")
    assert build_corpus(problems, stdlib_root=stdlib).fingerprint != before


def test_overlapping_split_is_an_error(fake: tuple[Path, Path]) -> None:
    problems, stdlib = fake
    (problems / "split.json").write_text(json.dumps({"train": ["practice", "held_out"],
                                                     "eval": ["held_out"]}))  # fmt: skip
    with pytest.raises(BenchmarkError, match="held_out"):
        build_corpus(problems, stdlib_root=stdlib)


def test_quixbugs_names_are_the_forty() -> None:
    assert len(set(QUIXBUGS_NAMES)) == 40
    assert normalise_name("_GCD_") == "gcd"
