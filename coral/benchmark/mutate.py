"""Bug instances derived from a benchmark's reference fixes (`coral bench mutate`, docs/benchmark.md).

Each instance is the reference of one problem (its *family*) with one single-line bug of a class
QuixBugs documents, found by coral.benchmark.mutations (the rest of the program is byte for byte
the reference).

An instance is kept only if the family's tests fail on it (the caller's `fails` judge runs them)
and its syntax tree differs from the reference and from every instance kept before. Candidates
are tried in an order drawn from (seed, family): classes round-robin, so one family's instances
spread over its bug classes. The output is a benchmark in the QuixBugs layout whose problem
FAMILY_NN defines FAMILY_NN (the loader requires the name), with the family's tests renamed to
match, a split.json in which every instance has its family's side, and mutants.json recording
each instance's family, bug class and changed line. Same source, seed and count: same bytes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from coral.benchmark.loader import (
    CORRECT,
    JSON_CASES,
    PROGRAMS,
    PYTEST_CASES,
    SUPPORT_FILES,
    load_benchmark,
    parse_json,
    read_text,
)
from coral.benchmark.mutations import BUG_CLASSES, Mutant, mutants, rename
from coral.benchmark.problem import Problem
from coral.benchmark.split import SPLIT_FILE, Split, load_split
from coral.errors import BenchmarkError
from coral.rng import stream

MANIFEST = "mutants.json"
MANIFEST_VERSION = 1
DEFAULT_PER_PROBLEM = 10
MAX_PER_PROBLEM = 99  # instance names carry two digits
# Root files of a QuixBugs layout copied unchanged, so pytest works in the output as in the source.
ROOT_FILES = ("conftest.py", "pytest.ini")

@dataclass(frozen=True)
class Instance:
    name: str
    family: str
    bug_class: str
    line: int
    before: str  # the reference's line (after renaming)
    after: str  # the instance's line ("" for a deleted line)
    buggy_source: str
    correct_source: str
    pytest_source: str | None
    passed: int = 0  # cases the instance's buggy program passes (the judge's run)
    cases: int = 0

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "bug_class": self.bug_class,
                "line": self.line, "before": self.before, "after": self.after,
                "passed": self.passed, "cases": self.cases}


# ---------------------------------------------------------------------- deriving instances

# judge(family, instance) -> (cases passed, cases) of the instance's buggy program.
Judge = Callable[[Problem, Problem], tuple[int, int]]


def candidate_order(family: str, found: Sequence[Mutant], seed: int) -> list[Mutant]:
    """Classes round-robin in an order drawn from (seed, family); within a class, shuffled."""
    rng = stream(seed, f"mutate:{family}")
    by_class = {c: [m for m in found if m.bug_class == c] for c in BUG_CLASSES}
    classes = [c for c in BUG_CLASSES if by_class[c]]
    classes = [classes[int(i)] for i in rng.permutation(len(classes))]
    queues = [[by_class[c][int(i)] for i in rng.permutation(len(by_class[c]))] for c in classes]
    order: list[Mutant] = []
    while any(queues):
        for queue in queues:
            if queue:
                order.append(queue.pop(0))
    return order


def instance_name(family: str, number: int) -> str:
    return f"{family}_{number:02d}"


def derive_family(problem: Problem, per_problem: int, seed: int, fails: Judge) -> list[Instance]:
    """Up to `per_problem` failing instances of one problem, in the order they were found."""
    reference = problem.correct_source
    found = mutants(reference)
    kept: list[Instance] = []
    for mutant in candidate_order(problem.name, found, seed):
        if len(kept) == per_problem:
            break
        name = instance_name(problem.name, len(kept) + 1)
        candidate = _instance(problem, name, mutant)
        passed, cases = fails(problem, _as_problem(problem, candidate))
        if passed < cases:
            kept.append(replace(candidate, passed=passed, cases=cases))
    return kept


def _instance(problem: Problem, name: str, mutant: Mutant) -> Instance:
    buggy = rename(mutant.source, problem.name, name)
    correct = rename(problem.correct_source, problem.name, name)
    before = correct.splitlines()[mutant.line - 1]
    buggy_lines = buggy.splitlines()
    deleted = len(buggy_lines) < len(correct.splitlines())
    after = "" if deleted else buggy_lines[mutant.line - 1]
    pytest_source = None if problem.pytest_source is None else rename(problem.pytest_source, problem.name, name)
    return Instance(name, problem.name, mutant.bug_class, mutant.line, before.strip(), after.strip(),
                    buggy, correct, pytest_source)


def _as_problem(family: Problem, instance: Instance) -> Problem:
    return replace(family, name=instance.name, buggy_source=instance.buggy_source,
                   correct_source=instance.correct_source, pytest_source=instance.pytest_source)


def derive(
    problems: Sequence[Problem], per_problem: int, seed: int, fails: Judge, jobs: int = 1
) -> dict[str, list[Instance]]:
    """Instances of every problem, by family; families run in parallel, each in its own order."""
    if not 1 <= per_problem <= MAX_PER_PROBLEM:
        raise BenchmarkError(f"--per-problem must lie in 1..{MAX_PER_PROBLEM}, got {per_problem}")
    names = {instance_name(p.name, i) for p in problems for i in range(1, per_problem + 1)}
    clash = sorted(names & {p.name for p in problems})
    if clash:
        raise BenchmarkError(f"instance name {clash[0]} would collide with the problem of that name")
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="mutate") as pool:
        found = list(pool.map(lambda p: derive_family(p, per_problem, seed, fails), problems))
    return {p.name: kept for p, kept in zip(problems, found, strict=True)}


# ---------------------------------------------------------------------- writing the benchmark


def source_digest(root: Path) -> str:
    """sha256 over the benchmark's program, test and split files (names and bytes)."""
    digest = hashlib.sha256()
    for folder in (PROGRAMS, CORRECT, JSON_CASES, PYTEST_CASES):
        for path in sorted((root / folder).glob("*")) if (root / folder).is_dir() else []:
            if path.is_file() and path.suffix in (".py", ".json"):
                digest.update(f"{folder}/{path.name}\0".encode() + path.read_bytes() + b"\0")
    split = root / SPLIT_FILE
    if split.is_file():
        digest.update(split.read_bytes())
    return digest.hexdigest()


def write_benchmark(
    source_root: Path, out: Path, families: dict[str, list[Instance]], split: Split, seed: int,
    per_problem: int,
) -> dict[str, Any]:
    """Write the instances as a QuixBugs-layout benchmark at `out` (which must be new or empty)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BenchmarkError(f"{out}: output folder exists and is not empty")
    instances = [i for name in sorted(families) for i in families[name]]
    if not instances:
        raise BenchmarkError(f"{source_root}: no mutant fails its problem's tests")
    sides = {name: "train" for name in split.train} | {name: "eval" for name in split.eval}
    new_split = {"train": sorted(i.name for i in instances if sides.get(i.family) == "train"),
                 "eval": sorted(i.name for i in instances if sides.get(i.family) == "eval")}
    for side in ("train", "eval"):
        if not new_split[side]:
            raise BenchmarkError(f"{source_root}: no instance on the {side} side of the split")
    for folder in (PROGRAMS, CORRECT, JSON_CASES, PYTEST_CASES):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for inst in instances:
        _write(out / PROGRAMS / f"{inst.name}.py", inst.buggy_source)
        _write(out / CORRECT / f"{inst.name}.py", inst.correct_source)
        cases = source_root / JSON_CASES / f"{inst.family}.json"
        if cases.is_file():
            (out / JSON_CASES / f"{inst.name}.json").write_bytes(cases.read_bytes())
        if inst.pytest_source is not None:
            _write(out / PYTEST_CASES / f"test_{inst.name}.py", inst.pytest_source)
    for folder in (PYTEST_CASES, PROGRAMS):
        for file_name in SUPPORT_FILES:
            if (source_root / folder / file_name).is_file():
                shutil.copyfile(source_root / folder / file_name, out / folder / file_name)
    for file_name in ROOT_FILES:
        if (source_root / file_name).is_file():
            shutil.copyfile(source_root / file_name, out / file_name)
    _write(out / SPLIT_FILE, json.dumps(new_split, indent=2) + "\n")
    manifest = {
        "version": MANIFEST_VERSION,
        "source_digest": source_digest(source_root),
        "seed": seed,
        "per_problem": per_problem,
        "families": {name: {"side": sides.get(name), "instances": len(families[name])}
                     for name in sorted(families)},
        "instances": [i.record() for i in instances],
    }
    _write(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def _write(path: Path, text: str) -> None:
    path.write_bytes(text.encode("utf-8"))


def read_manifest(root: Path) -> dict[str, Any] | None:
    """ROOT/mutants.json (what `coral bench mutate` wrote), or None for a plain benchmark."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    data = parse_json(path, read_text(path))
    if not isinstance(data, dict) or not isinstance(data.get("instances"), list):
        raise BenchmarkError(f'{path}: expected an object with an "instances" list')
    return data


def families(root: Path) -> dict[str, str]:
    """Problem name -> family: from mutants.json, else every problem is its own family."""
    manifest = read_manifest(root)
    if manifest is None:
        return {p.name: p.name for p in load_benchmark(root)}
    return {str(i["name"]): str(i["family"]) for i in manifest["instances"]}


def mutate_benchmark(
    root: Path, out: Path, per_problem: int, seed: int, fails: Judge, jobs: int = 1,
    split_path: Path | None = None,
) -> dict[str, Any]:
    """Load `root`, derive instances, write them to `out`; returns the manifest."""
    root, out = Path(root), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BenchmarkError(f"{out}: output folder exists and is not empty")
    problems = load_benchmark(root)
    split = load_split(root, split_path)
    found = derive(problems, per_problem, seed, fails, jobs)
    return write_benchmark(root, out, found, split, seed, per_problem)
