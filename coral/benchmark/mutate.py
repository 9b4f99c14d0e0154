"""Bug instances derived from a benchmark's reference fixes (`coral bench mutate`, docs/benchmark.md).

Each instance is the reference of one problem (its *family*) with one single-line bug of a class
QuixBugs documents (Lin et al. 2017): wrong comparison / arithmetic / boolean / assignment
operator, off-by-one constant or bound, wrong variable, swapped arguments, missing or negated
condition, wrong slice bound, wrong return value, missing `+ 1` or term, missing call, missing
line. Mutations are found and checked with `ast` and spliced into the source as text, so the rest
of the program (docstring, comments, layout) is byte for byte the reference.

An instance is kept only if the family's tests fail on it (the caller's `fails` judge runs them)
and its syntax tree differs from the reference and from every instance kept before. Candidates
are tried in an order drawn from (seed, family): classes round-robin, so one family's instances
spread over its bug classes. The output is a benchmark in the QuixBugs layout whose problem
FAMILY_NN defines FAMILY_NN (the loader requires the name), with the family's tests renamed to
match, a split.json in which every instance has its family's side, and mutants.json recording
each instance's family, bug class and changed line. Same source, seed and count: same bytes.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import io
import json
import shutil
import tokenize
from collections.abc import Callable, Iterable, Sequence
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
    read_text,
)
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

BUG_CLASSES: tuple[str, ...] = (
    "comparison_operator", "arithmetic_operator", "boolean_operator", "assignment_operator",
    "off_by_one", "wrong_variable", "swapped_arguments", "missing_condition",
    "negated_condition", "slice_bound", "return_value", "missing_plus_one",
    "missing_arithmetic", "wrong_constant", "missing_call", "missing_line",
)  # fmt: skip

_CMP_SWAPS: dict[type, tuple[type, ...]] = {
    ast.Lt: (ast.LtE, ast.Gt), ast.LtE: (ast.Lt, ast.GtE), ast.Gt: (ast.GtE, ast.Lt),
    ast.GtE: (ast.Gt, ast.LtE), ast.Eq: (ast.NotEq,), ast.NotEq: (ast.Eq,),
    ast.Is: (ast.IsNot,), ast.IsNot: (ast.Is,), ast.In: (ast.NotIn,), ast.NotIn: (ast.In,),
}  # fmt: skip
_ARITH_SWAPS: dict[type, tuple[type, ...]] = {
    ast.Add: (ast.Sub,), ast.Sub: (ast.Add,), ast.Mult: (ast.Add, ast.FloorDiv),
    ast.Div: (ast.FloorDiv, ast.Mult), ast.FloorDiv: (ast.Div, ast.Mod), ast.Mod: (ast.FloorDiv,),
    ast.Pow: (ast.Mult,), ast.LShift: (ast.RShift,), ast.RShift: (ast.LShift,),
    ast.BitAnd: (ast.BitOr,), ast.BitOr: (ast.BitAnd,), ast.BitXor: (ast.BitOr,),
}  # fmt: skip
_NON_COMMUTATIVE = (ast.Sub, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.LShift, ast.RShift)
# Calls whose argument alone is often still a plausible value: dropping them is a QuixBugs slip.
_UNWRAPPABLE = frozenset({"abs", "sorted", "reversed", "list", "int", "round", "len", "str", "set"})
_DELETABLE = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.Break, ast.Continue)


@dataclass(frozen=True)
class Mutant:
    """One candidate bug: the mutated source and where it changed."""

    bug_class: str
    line: int  # 1-based line of the reference that changed
    source: str


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


# ---------------------------------------------------------------------- finding mutations


@dataclass(frozen=True)
class Site:
    """One possible bug: `node` replaced by `new` (None: its line deleted)."""

    bug_class: str
    node: ast.expr | ast.stmt
    new: ast.AST | None


@dataclass(frozen=True)
class Parsed:
    """A program as mutations see it; `apply` writes one site's bug into its text."""

    tree: ast.Module
    lines: list[str]
    parents: dict[int, tuple[ast.AST, str, int | None]]

    def apply(self, site: Site) -> str | None:
        """The mutated text, or None when the site cannot be written as one line's change."""
        if site.new is None:
            return _delete_line(self.lines, site.node)
        return _splice(self.tree, self.lines, self.parents, site.node, site.new)


def mutation_sites(source: str) -> tuple[Parsed, list[Site]]:
    """Every place a bug class applies in the functions of `source`, in source-walk order
    (each function's expression and statement variants, then its deletable lines).
    `mutants` tries them all; the tiny model's corpus (coral.model.corpus) draws one."""
    tree = ast.parse(source)
    parsed = Parsed(tree, source.splitlines(keepends=True), _parents(tree))
    skip = _untouchable(tree)
    sites: list[Site] = []
    for function in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
        local = _local_names(function)
        for node in ast.walk(function):
            # Only expressions and statements have positions a mutation can be written at.
            if id(node) not in skip and node is not function and isinstance(node, ast.expr | ast.stmt):
                sites += [Site(c, node, new) for c, new in _variants(node, parsed.parents, local)]
        for block in _blocks(function):
            if len(block) >= 2:
                sites += [Site("missing_line", stmt, None) for stmt in block if id(stmt) not in skip]
    return parsed, sites


def mutants(source: str) -> list[Mutant]:
    """Every single-line mutation of the functions in `source` that parses and changes the
    syntax tree, in source order, without duplicates."""
    parsed, sites = mutation_sites(source)
    seen = {ast.dump(parsed.tree)}
    found: list[Mutant] = []
    for site in sites:
        text = parsed.apply(site)
        if text is None:
            continue
        try:
            dump = ast.dump(ast.parse(text))
        except SyntaxError:
            continue
        if dump not in seen:
            seen.add(dump)
            found.append(Mutant(site.bug_class, site.node.lineno, text))
    return sorted(found, key=lambda m: (m.line, BUG_CLASSES.index(m.bug_class), m.source))


def _parents(tree: ast.AST) -> dict[int, tuple[ast.AST, str, int | None]]:
    out: dict[int, tuple[ast.AST, str, int | None]] = {}
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, ast.AST):
                        out[id(item)] = (parent, field, i)
            elif isinstance(value, ast.AST):
                out[id(value)] = (parent, field, None)
    return out


def _untouchable(tree: ast.AST) -> set[int]:
    """Docstrings and f-strings (whose inner positions Python 3.11 does not report exactly)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            skip.update(id(n) for n in ast.walk(node))
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
            first.value.value, str
        ):
            skip.update(id(n) for n in ast.walk(first))
    return skip


def _local_names(function: ast.FunctionDef) -> list[str]:
    args = function.args
    names = {a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)}
    names |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
    for node in ast.walk(function):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return sorted(names)


def _blocks(function: ast.FunctionDef) -> Iterable[list[ast.stmt]]:
    for node in ast.walk(function):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                yield block


def _plus(node: ast.expr, op: ast.operator) -> ast.BinOp:
    return ast.BinOp(left=copy.deepcopy(node), op=op, right=ast.Constant(1))


def _variants(
    node: ast.AST, parents: dict[int, tuple[ast.AST, str, int | None]], local: list[str]
) -> list[tuple[str, ast.AST]]:
    """(bug class, replacement node) for each mutation of this node."""
    out: list[tuple[str, ast.AST]] = []
    parent = parents.get(id(node), (None, "", None))[0]
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            for alt in _CMP_SWAPS.get(type(op), ()):
                new = copy.deepcopy(node)
                new.ops[i] = alt()
                out.append(("comparison_operator", new))
    elif isinstance(node, ast.BinOp):
        for alt in _ARITH_SWAPS.get(type(node.op), ()):
            out.append(("arithmetic_operator", ast.BinOp(node.left, alt(), node.right)))
        if isinstance(node.op, _NON_COMMUTATIVE):
            out.append(("swapped_arguments", ast.BinOp(node.right, node.op, node.left)))
        if isinstance(node.op, ast.Add | ast.Sub):
            one = isinstance(node.right, ast.Constant) and node.right.value == 1
            out.append(("missing_plus_one" if one else "missing_arithmetic", node.left))
    elif isinstance(node, ast.AugAssign):
        for alt in _ARITH_SWAPS.get(type(node.op), ()):
            out.append(("arithmetic_operator", ast.AugAssign(node.target, alt(), node.value)))
        out.append(("assignment_operator", ast.Assign([node.target], node.value, lineno=node.lineno)))
    elif isinstance(node, ast.BoolOp):
        other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        out.append(("boolean_operator", ast.BoolOp(other, node.values)))
        for i in range(len(node.values)):
            rest = node.values[:i] + node.values[i + 1 :]
            out.append(("missing_condition", rest[0] if len(rest) == 1 else ast.BoolOp(node.op, rest)))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        out.append(("negated_condition", node.operand))
    elif isinstance(node, ast.Constant) and type(node.value) is bool:
        out.append(("wrong_constant", ast.Constant(not node.value)))
    elif isinstance(node, ast.Constant) and type(node.value) is int and node.value >= 0:
        kind = "slice_bound" if isinstance(parent, ast.Slice) else "off_by_one"
        out += [(kind, ast.Constant(node.value + 1))]
        if node.value > 0:
            out += [(kind, ast.Constant(node.value - 1))]
    elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in local:
        kind = "return_value" if isinstance(parent, ast.Return) else "wrong_variable"
        out += [(kind, ast.Name(other, ast.Load())) for other in local if other != node.id]
    elif isinstance(node, ast.Call):
        positional = [a for a in node.args if not isinstance(a, ast.Starred)]
        if len(positional) == len(node.args):
            for i in range(len(node.args) - 1):
                args = list(node.args)
                args[i], args[i + 1] = args[i + 1], args[i]
                out.append(("swapped_arguments", ast.Call(node.func, args, node.keywords)))
        if isinstance(node.func, ast.Name):
            if node.func.id in _UNWRAPPABLE and len(node.args) == 1 and not node.keywords:
                out.append(("missing_call", node.args[0]))
            if node.func.id == "range" and 1 <= len(node.args) <= 3 and not node.keywords:
                for i, arg in enumerate(node.args[:2]):
                    if not isinstance(arg, ast.Constant):
                        for arith in (ast.Add(), ast.Sub()):
                            args = list(node.args)
                            args[i] = _plus(arg, arith)
                            out.append(("off_by_one", ast.Call(node.func, args, [])))
    elif isinstance(node, ast.Subscript):
        if isinstance(node.slice, ast.Slice):
            for field in ("lower", "upper"):
                bound = getattr(node.slice, field)
                if bound is None:
                    continue
                options: list[ast.expr | None] = [None]
                if not isinstance(bound, ast.Constant):
                    options += [_plus(bound, ast.Add()), _plus(bound, ast.Sub())]
                for option in options:
                    new_slice = copy.deepcopy(node.slice)
                    setattr(new_slice, field, option)
                    out.append(("slice_bound", ast.Subscript(node.value, new_slice, node.ctx)))
        elif not isinstance(node.slice, ast.Constant | ast.Tuple) and isinstance(node.ctx, ast.Load):
            for arith in (ast.Add(), ast.Sub()):
                out.append(("off_by_one", ast.Subscript(node.value, _plus(node.slice, arith), node.ctx)))
    elif isinstance(node, ast.Tuple) and isinstance(node.ctx, ast.Load) and isinstance(
        parent, ast.Assign | ast.Return
    ) and not any(isinstance(e, ast.Starred) for e in node.elts):
        for i in range(len(node.elts) - 1):
            elts = list(node.elts)
            elts[i], elts[i + 1] = elts[i + 1], elts[i]
            out.append(("swapped_arguments", ast.Tuple(elts, ast.Load())))
    elif isinstance(node, ast.If | ast.While) and not (
        isinstance(node.test, ast.UnaryOp) and isinstance(node.test.op, ast.Not)
    ):
        # Only the test changes: the replacement is the test node, spliced in place of it.
        out.append(("negated_condition", ast.UnaryOp(ast.Not(), node.test)))
    if isinstance(node, ast.Return) and node.value is not None and not (
        isinstance(node.value, ast.Constant) and node.value.value is None
    ):
        out.append(("return_value", ast.Return(ast.Constant(None))))
    return out


def _splice(
    tree: ast.Module,
    lines: list[str],
    parents: dict[int, tuple[ast.AST, str, int | None]],
    node: ast.expr | ast.stmt,
    new: ast.AST,
) -> str | None:
    """The source with `node` replaced by `new` on its one line, or None when that cannot be
    written on one line so that it parses to exactly the intended tree."""
    target = node.test if isinstance(node, ast.If | ast.While) else node
    lineno, end = getattr(target, "lineno", None), getattr(target, "end_lineno", None)
    if lineno is None or lineno != end:
        return None
    intended = _swapped_dump(tree, parents, target, new)
    raw = lines[lineno - 1].encode()
    head, tail = raw[: target.col_offset], raw[target.end_col_offset :]
    text = ast.unparse(new)
    if "\n" in text:
        return None
    options = [text, f"({text})"]
    if isinstance(new, ast.Tuple) and text.startswith("("):
        options.insert(0, text[1:-1])  # unparse brackets every tuple; the reference may not
    for candidate in options:
        line = (head + candidate.encode() + tail).decode()
        source = "".join(lines[: lineno - 1]) + line + "".join(lines[lineno:])
        try:
            if ast.dump(ast.parse(source)) == intended:
                return source
        except SyntaxError:
            continue
    return None


def _swapped_dump(
    tree: ast.Module, parents: dict[int, tuple[ast.AST, str, int | None]], node: ast.AST,
    new: ast.AST,
) -> str:
    """ast.dump of the tree with `node` replaced by `new` (the tree is restored afterwards)."""
    parent, field, index = parents[id(node)]
    if index is None:
        setattr(parent, field, new)
    else:
        getattr(parent, field)[index] = new
    try:
        return ast.dump(tree)
    finally:
        if index is None:
            setattr(parent, field, node)
        else:
            getattr(parent, field)[index] = node


def _delete_line(lines: list[str], stmt: ast.expr | ast.stmt) -> str | None:
    """The source without `stmt`, when the statement is alone on its line."""
    if not isinstance(stmt, _DELETABLE) or stmt.lineno != stmt.end_lineno:
        return None
    raw = lines[stmt.lineno - 1].encode()
    if raw[: stmt.col_offset].strip() or raw[stmt.end_col_offset :].strip():
        return None
    return "".join(lines[: stmt.lineno - 1]) + "".join(lines[stmt.lineno :])


# ---------------------------------------------------------------------- renaming


def rename(source: str, old: str, new: str) -> str:
    """`source` with every NAME token `old` replaced by `new` (strings and comments untouched)."""
    lines = source.splitlines(keepends=True)
    hits: dict[int, list[int]] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.NAME and tok.string == old:
                hits.setdefault(tok.start[0], []).append(tok.start[1])
    except (tokenize.TokenError, SyntaxError) as exc:
        raise BenchmarkError(f"cannot rename {old} in a program that does not tokenize ({exc})") from None
    for row, cols in hits.items():
        line = lines[row - 1]
        for col in sorted(cols, reverse=True):
            line = line[:col] + new + line[col + len(old) :]
        lines[row - 1] = line
    return "".join(lines)


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
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
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
