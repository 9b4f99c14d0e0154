"""`coral bench mutate`: bug instances from references, failing, deterministic, split by family."""

from __future__ import annotations

import ast
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import REPO, run_coral

from coral.benchmark.loader import load_benchmark
from coral.benchmark.mutate import families, read_manifest, source_digest
from coral.benchmark.mutations import BUG_CLASSES, mutants, rename
from coral.benchmark.split import load_split
from coral.cli import main
from coral.sandbox.judge import SandboxJudge
from coral.sandbox.runner import run_candidate

PROBLEMS = REPO / "data" / "problems"
COMMITTED = REPO / "data" / "mutants"
MINI = REPO / "tests" / "fixtures" / "mini_bench"

SAMPLE = '''def f(xs, k):
    """Doc: a < b stays."""
    total = 0
    for i in range(len(xs)):
        if xs[i] < k and i > 0:
            total += xs[i] + 1
    return total
'''


def test_mutants_are_single_line_edits_of_many_classes() -> None:
    found = mutants(SAMPLE)
    classes = {m.bug_class for m in found}
    assert {"comparison_operator", "boolean_operator", "off_by_one", "wrong_variable",
            "missing_plus_one", "missing_condition", "negated_condition", "arithmetic_operator",
            "assignment_operator", "return_value", "missing_line"} <= classes
    assert classes <= set(BUG_CLASSES)
    original = SAMPLE.splitlines()
    dumps = set()
    for m in found:
        tree = ast.parse(m.source)  # every mutant parses
        dumps.add(ast.dump(tree))
        lines = m.source.splitlines()
        if m.bug_class == "missing_line":
            assert lines == original[: m.line - 1] + original[m.line :]
        else:
            changed = [i for i, (a, b) in enumerate(zip(original, lines, strict=True)) if a != b]
            assert changed == [m.line - 1], m
    assert len(dumps) == len(found)  # no two mutants share a syntax tree
    assert ast.dump(ast.parse(SAMPLE)) not in dumps
    assert all('"""Doc: a < b stays."""' in m.source for m in found)  # docstrings untouched
    swapped = [m.source.splitlines()[4] for m in found if m.bug_class == "comparison_operator"]
    assert "        if xs[i] <= k and i > 0:" in swapped


def test_rename_touches_names_only() -> None:
    source = 'def gcd(a, b):\n    "gcd of a, b"  # gcd\n    return gcd(b, a % b) if b else a\n'
    assert rename(source, "gcd", "gcd_01") == (
        'def gcd_01(a, b):\n    "gcd of a, b"  # gcd\n    return gcd_01(b, a % b) if b else a\n'
    )


def test_committed_instances_number_hundreds_and_never_cross_the_split() -> None:
    """data/mutants is `coral bench mutate data/problems --out data/mutants` (seed 0, 10 per
    problem); the next test re-derives part of it and compares bytes."""
    manifest = read_manifest(COMMITTED)
    assert manifest is not None and manifest["seed"] == 0
    assert manifest["source_digest"] == source_digest(PROBLEMS)  # not stale
    instances = manifest["instances"]
    assert len(instances) >= 300
    problems = load_benchmark(COMMITTED)
    assert sorted(p.name for p in problems) == sorted(i["name"] for i in instances)
    split = load_split(COMMITTED)
    fam = families(COMMITTED)
    train_families = {fam[n] for n in split.train}
    eval_families = {fam[n] for n in split.eval}
    assert not train_families & eval_families
    source_split = load_split(PROBLEMS)
    assert eval_families == set(source_split.eval) and train_families == set(source_split.train)
    assert len(split.eval) >= 150
    assert {i["bug_class"] for i in instances} >= {
        "comparison_operator", "arithmetic_operator", "off_by_one", "wrong_variable",
        "swapped_arguments", "missing_condition", "return_value", "missing_line"}


@pytest.mark.slow
def test_a_second_derivation_gives_the_same_bytes(tmp_path: Path) -> None:
    """Candidates are tried in a fixed order and the first N failing ones kept, so deriving one
    instance per problem again reproduces the committed FAMILY_01 files byte for byte."""
    out = tmp_path / "again"
    assert main(["bench", "mutate", str(PROBLEMS), "--out", str(out), "--per-problem", "1"]) == 0
    written = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    programs = [p.stem for p in written if p.parts[0] == "python_programs" and p.stem != "node"]
    assert programs == sorted(f"{p.name}_01" for p in load_benchmark(PROBLEMS))
    for rel in written:
        if rel.name not in ("split.json", "mutants.json"):
            assert (out / rel).read_bytes() == (COMMITTED / rel).read_bytes(), rel
    again = read_manifest(out)
    committed = {i["name"]: i for i in read_manifest(COMMITTED)["instances"]}
    assert again is not None
    assert all(i == committed[i["name"]] for i in again["instances"])


@pytest.mark.slow
def test_every_instance_fails_a_test_and_its_reference_passes() -> None:
    """The judge's counts are in the manifest; one instance per family (the last kept, so a
    different bug class for most) is run again here, with its family's reference first."""
    manifest = read_manifest(COMMITTED)
    assert manifest is not None
    assert all(0 <= i["passed"] < i["cases"] for i in manifest["instances"])
    problems = {p.name: p for p in load_benchmark(COMMITTED)}
    last: dict[str, dict] = {}
    for inst in manifest["instances"]:
        last[inst["family"]] = inst
    judge = SandboxJudge()
    originals = {p.name: p for p in load_benchmark(PROBLEMS)}
    with ThreadPoolExecutor(2) as pool:
        counts = list(pool.map(lambda i: judge(originals[i["family"]], problems[i["name"]]),
                               last.values()))
    assert len(counts) == len(originals)
    for inst, (passed, cases) in zip(last.values(), counts, strict=True):
        assert (passed, cases) == (inst["passed"], inst["cases"]), inst
        assert run_candidate(problems[inst["name"]], problems[inst["name"]].correct_source).fixed


def test_a_quixbugs_clone_without_split_file_mutates_and_every_tool_reads_it(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    shutil.copytree(MINI, clone, ignore=shutil.ignore_patterns("__pycache__"))
    (clone / "split.json").unlink()
    out = tmp_path / "out"
    result = run_coral("bench", "mutate", str(clone), "--out", str(out), "--per-problem", "3",
                       "--seed", "7", timeout=300)
    assert result.returncode == 0, result.stderr
    problems = {p.name: p for p in load_benchmark(out)}
    fam = families(out)
    assert set(fam.values()) <= {p.name for p in load_benchmark(clone)}
    derived_split = load_split(clone)
    split = load_split(out)
    assert {fam[n] for n in split.eval} <= set(derived_split.eval)
    # The pytest-style family keeps working under its new name: the reference passes, the
    # instance fails, both judged by the renamed test file.
    cycle = [p for n, p in problems.items() if fam[n] == "reverse_list"]
    assert cycle and all(p.pytest_source and p.name in p.pytest_source for p in cycle)
    for problem in cycle:
        assert run_candidate(problem, problem.correct_source).fixed
        assert not run_candidate(problem, problem.buggy_source).fixed


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "x").write_text("keep me")
    assert main(["bench", "mutate", str(MINI), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not empty" in err
    assert (out / "x").read_text() == "keep me"
    assert main(["bench", "mutate", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
