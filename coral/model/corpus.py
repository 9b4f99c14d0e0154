"""The tiny model's training corpus: short real functions, pinned by file hashes.

Sources: the running interpreter's standard library (functions extracted with `ast`) and the
TRAINING split of the bundled problems. Never the evaluation split. Stdlib functions whose names
match a bundled problem (either split) or a QuixBugs problem are left out, so the model never
sees a reference solution to anything it may be evaluated on.
"""

from __future__ import annotations

import ast
import hashlib
import sysconfig
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coral.benchmark.loader import CORRECT, PROGRAMS, problem_names, read_text
from coral.benchmark.prompts import FENCE
from coral.benchmark.split import SPLIT_FILE, derive_split, read_split
from coral.errors import BenchmarkError
from coral.hashing import content_hash

QUIXBUGS_NAMES: tuple[str, ...] = (
    "bitcount", "breadth_first_search", "bucketsort", "depth_first_search", "detect_cycle",
    "find_first_in_sorted", "find_in_sorted", "flatten", "gcd", "get_factors", "hanoi",
    "is_valid_parenthesization", "kheapsort", "knapsack", "kth", "lcs_length", "levenshtein",
    "lis", "longest_common_subsequence", "max_sublist_sum", "mergesort", "minimum_spanning_tree",
    "next_palindrome", "next_permutation", "pascal", "possible_change", "powerset", "quicksort",
    "reverse_linked_list", "rpn_eval", "shortest_path_length", "shortest_path_lengths",
    "shortest_paths", "shunting_yard", "sieve", "sqrt", "subsequences", "to_base",
    "topological_ordering", "wrap",
)  # fmt: skip

# Stdlib folders that are tests, vendored packages or build-specific files, not library code.
_SKIP_PARTS = frozenset({"site-packages", "test", "tests", "idle_test", "__pycache__"})
_SKIP_PREFIXES = ("config-", "_sysconfigdata")


@dataclass(frozen=True)
class CorpusFunction:
    name: str
    source: str  # dedented, docstring removed, trailing whitespace stripped
    origin: str  # "stdlib/json/encoder.py:123" or "problems/NAME"


@dataclass(frozen=True)
class ProblemPair:
    """A real repair pair from the training split: (buggy program, fixed program)."""

    name: str
    buggy: str
    fixed: str


@dataclass(frozen=True)
class Corpus:
    functions: tuple[CorpusFunction, ...]  # stdlib + fixed training programs
    pairs: tuple[ProblemPair, ...]  # real bugs of the training split
    files: tuple[tuple[str, str], ...]  # (relative label, sha256) of every file read
    excluded_names: frozenset[str]  # normalised names never taken from the stdlib
    train_names: tuple[str, ...]
    eval_names: tuple[str, ...]

    @property
    def fingerprint(self) -> str:
        """One id for the corpus content: a different stdlib or problem set gives another."""
        return content_hash({"files": self.files, "excluded": sorted(self.excluded_names)}, 64)


def normalise_name(name: str) -> str:
    """`_GCD` and `gcd` name the same algorithm: compare lowercase, without edge underscores."""
    return name.lower().strip("_")


def default_stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def strip_docstring(source: str, keep_lines: int = 6) -> str | None:
    """The function without a docstring longer than `keep_lines` lines (short ones stay, as in
    the bundled problems); None if nothing but the docstring remains."""
    tree = ast.parse(source)
    node = tree.body[0]
    if not isinstance(node, ast.FunctionDef):
        return source
    first = node.body[0]
    if not (
        isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
    ):
        return source
    if len(node.body) == 1:
        return None
    end = first.end_lineno or first.lineno
    # A docstring on the `def` line (`def f(): "doc"; ...`) is left alone, as are short ones.
    if first.lineno == node.lineno or end - first.lineno + 1 <= keep_lines:
        return source
    lines = source.splitlines()
    return "\n".join(lines[: first.lineno - 1] + lines[end:])


def extract_functions(
    text: str, origin: str, excluded: frozenset[str], max_lines: int, max_chars: int
) -> list[CorpusFunction]:
    """Every plain `def` in a module (methods and nested ones too) that is short enough."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return []  # e.g. deliberately broken files in the stdlib's own data folders
    lines = text.splitlines()
    found: list[CorpusFunction] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef) or node.end_lineno is None:
            continue
        if normalise_name(node.name) in excluded:
            continue
        if node.end_lineno - node.lineno + 1 > max_lines * 3:
            continue  # far too long even after removing a docstring: skip the work
        source = textwrap.dedent("\n".join(lines[node.lineno - 1 : node.end_lineno]))
        try:
            stripped = strip_docstring(source)
        except SyntaxError:
            continue  # a def whose body continues on the def line in odd ways
        if stripped is None:
            continue
        # Blank lines stay (the bundled problems have them; a model that never saw one inside a
        # function loses its place when copying one), trailing spaces go.
        body = "\n".join(line.rstrip() for line in stripped.splitlines()).strip("\n")
        if "\t" in body or FENCE in body or not 2 <= body.count("\n") + 1 <= max_lines or len(body) > max_chars:
            continue
        found.append(CorpusFunction(node.name, body, f"{origin}:{node.lineno}"))
    return found


def _split_names(root: Path, split_path: Path | None) -> tuple[list[str], tuple[str, ...], tuple[str, ...]]:
    """(all problem names, train, eval) as coral.benchmark.split decides them, from the folder
    listing alone: the evaluation programs are never opened."""
    if not (root / PROGRAMS).is_dir():
        raise BenchmarkError(f"benchmark directory not found or without {PROGRAMS}/: {root}")
    names = problem_names(root / PROGRAMS)
    if split_path is not None and not Path(split_path).is_file():
        raise BenchmarkError(f"split file not found: {split_path}")
    path = Path(split_path) if split_path is not None else root / SPLIT_FILE
    split = read_split(path, names) if path.is_file() else derive_split(names)
    return names, tuple(split.train), tuple(split.eval)


def _stdlib_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if _SKIP_PARTS & set(rel.parts[:-1]) or rel.parts[0].startswith(_SKIP_PREFIXES):
            continue
        if rel.name.startswith(_SKIP_PREFIXES):
            continue
        files.append(path)
    return files


def build_corpus(
    problems_root: Path | None,
    split_path: Path | None = None,
    stdlib_root: Path | None = None,
    max_lines: int = 30,
    max_chars: int = 1200,
) -> Corpus:
    """Read the stdlib and the training split; record every corpus file with its sha256.

    `problems_root=None` builds from the stdlib alone (no bundled problems to learn from);
    `split_path` defaults to the benchmark's own rule (ROOT/split.json, else derived).
    """
    stdlib_root = stdlib_root or default_stdlib_root()
    if not stdlib_root.is_dir():
        raise BenchmarkError(f"standard library folder not found: {stdlib_root}")
    train: tuple[str, ...] = ()
    evaluation: tuple[str, ...] = ()
    bundled: list[str] = []
    if problems_root is not None:
        bundled, train, evaluation = _split_names(problems_root, split_path)
    excluded = frozenset(normalise_name(n) for n in (*QUIXBUGS_NAMES, *bundled))

    files: list[tuple[str, str]] = []
    functions: list[CorpusFunction] = []
    seen: set[str] = set()
    for path in _stdlib_files(stdlib_root):
        data = path.read_bytes()
        label = "stdlib/" + path.relative_to(stdlib_root).as_posix()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        found = extract_functions(text, label, excluded, max_lines, max_chars)
        fresh = [f for f in found if f.source not in seen]
        if not fresh:
            continue
        files.append((label, hashlib.sha256(data).hexdigest()))
        for function in fresh:
            seen.add(function.source)
            functions.append(function)

    pairs: list[ProblemPair] = []
    for name in train if problems_root is not None else ():
        texts = []
        for folder in (PROGRAMS, CORRECT):
            path = problems_root / folder / f"{name}.py"
            texts.append(read_text(path))
            files.append((f"problems/{folder}/{name}.py", hashlib.sha256(path.read_bytes()).hexdigest()))
        pairs.append(ProblemPair(name, texts[0], texts[1]))
        fixed = texts[1].strip("\n")
        if fixed not in seen:
            seen.add(fixed)
            functions.append(CorpusFunction(name, fixed, f"problems/{name}"))
    return Corpus(
        functions=tuple(functions),
        pairs=tuple(pairs),
        files=tuple(files),
        excluded_names=excluded,
        train_names=train,
        eval_names=evaluation,
    )


# ---------------------------------------------------------------- synthetic bug injection

# Operator swaps: the kinds of one-token slips QuixBugs is made of.
_BINOP_SWAPS: dict[type, tuple[str, str]] = {
    ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "+"), ast.FloorDiv: ("//", "/"),
    ast.Div: ("/", "//"), ast.Mod: ("%", "//"), ast.LShift: ("<<", ">>"),
    ast.RShift: (">>", "<<"), ast.BitAnd: ("&", "|"), ast.BitOr: ("|", "&"),
    ast.BitXor: ("^", "&"), ast.Pow: ("**", "*"),
}  # fmt: skip
_CMP_SWAPS: dict[type, tuple[str, tuple[str, ...]]] = {
    ast.Lt: ("<", ("<=", ">")), ast.LtE: ("<=", ("<", ">=")), ast.Gt: (">", (">=", "<")),
    ast.GtE: (">=", (">", "<=")), ast.Eq: ("==", ("!=",)), ast.NotEq: ("!=", ("==",)),
    ast.Is: ("is", ("is not",)), ast.IsNot: ("is not", ("is",)),
    ast.In: ("in", ("not in",)), ast.NotIn: ("not in", ("in",)),
}  # fmt: skip
BUG_KINDS = ("operator", "comparison", "boolean", "constant", "bound", "variable", "drop_term")


@dataclass(frozen=True)
class BugSite:
    """Replace bytes [start, end) of one line (UTF-8 offsets, as ast reports) with `options`."""

    kind: str
    line: int  # 1-based
    start: int
    end: int
    options: tuple[str, ...]


@dataclass(frozen=True)
class Bug:
    kind: str
    line: int  # 1-based line of the function that changed
    before: str
    after: str


def _segment(lines: list[bytes], node: ast.AST) -> str | None:
    """The node's text if it sits on one line, else None (the bug must touch one line only)."""
    if getattr(node, "lineno", None) is None or node.lineno != node.end_lineno:
        return None
    return lines[node.lineno - 1][node.col_offset : node.end_col_offset].decode()


def _gap_site(
    lines: list[bytes],
    kind: str,
    left: ast.AST,
    right: ast.AST,
    symbol: str,
    options: tuple[str, ...],
) -> BugSite | None:
    """The operator between two operands on one line, found exactly (parentheses allowed)."""
    if left.end_lineno != right.lineno or left.lineno != right.end_lineno:
        return None
    gap = lines[left.end_lineno - 1][left.end_col_offset : right.col_offset].decode()
    operator = gap.strip(" ()")
    if operator.split() != symbol.split():  # `is  not` may be spelled with extra spaces
        return None
    offset = left.end_col_offset + len(gap[: gap.index(operator)].encode())
    span = len(operator.encode())
    return BugSite(kind, left.end_lineno, offset, offset + span, options)


def _local_names(function: ast.FunctionDef) -> list[str]:
    names = {a.arg for a in (*function.args.posonlyargs, *function.args.args,
                             *function.args.kwonlyargs)}  # fmt: skip
    for node in ast.walk(function):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return sorted(names)


def bug_sites(source: str) -> list[BugSite]:
    """Every place one synthetic bug can go, in source order."""
    tree = ast.parse(source)
    lines = [line.encode() for line in source.splitlines()]
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    local = sorted({name for f in functions for name in _local_names(f)})
    # Positions inside f-strings are unreliable before Python 3.12: never mutate there.
    in_fstring = {id(n) for j in ast.walk(tree) if isinstance(j, ast.JoinedStr)
                  for n in ast.walk(j)}  # fmt: skip
    sites: list[BugSite | None] = []
    for node in ast.walk(tree):
        if id(node) in in_fstring:
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAPS:
            symbol, swap = _BINOP_SWAPS[type(node.op)]
            sites.append(_gap_site(lines, "operator", node.left, node.right, symbol, (swap,)))
            left = _segment(lines, node.left)
            if isinstance(node.op, (ast.Add, ast.Sub)) and left and _segment(lines, node):
                sites.append(BugSite("drop_term", node.lineno, node.col_offset,
                                     node.end_col_offset, (left,)))  # fmt: skip
        elif isinstance(node, ast.AugAssign) and type(node.op) in _BINOP_SWAPS:
            symbol, swap = _BINOP_SWAPS[type(node.op)]
            sites.append(_gap_site(lines, "operator", node.target, node.value, symbol + "=",
                                   (swap + "=",)))  # fmt: skip
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for i, op in enumerate(node.ops):
                if type(op) in _CMP_SWAPS:
                    symbol, swaps = _CMP_SWAPS[type(op)]
                    sites.append(_gap_site(lines, "comparison", operands[i], operands[i + 1],
                                           symbol, swaps))  # fmt: skip
        elif isinstance(node, ast.BoolOp):
            symbol, swap = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
            for a, b in zip(node.values, node.values[1:], strict=False):
                sites.append(_gap_site(lines, "boolean", a, b, symbol, (swap,)))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            operand = _segment(lines, node.operand)
            if operand and _segment(lines, node):
                sites.append(BugSite("drop_term", node.lineno, node.col_offset,
                                     node.end_col_offset, (operand,)))  # fmt: skip
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            text = _segment(lines, node)
            if text and text.isdigit():
                value = int(text)
                options = (str(value + 1), str(value - 1)) if value > 0 else (str(value + 1),)
                sites.append(BugSite("constant", node.lineno, node.col_offset,
                                     node.end_col_offset, options))  # fmt: skip
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and (node.func.id == "range" and 1 <= len(node.args) <= 3 and not node.keywords)
        ):
            stop = node.args[0] if len(node.args) == 1 else node.args[1]
            text = _segment(lines, stop)
            if text and not isinstance(stop, ast.Constant):
                sites.append(BugSite("bound", stop.lineno, stop.col_offset, stop.end_col_offset,
                                     (f"{text} + 1", f"{text} - 1")))  # fmt: skip
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Name):
            text = _segment(lines, node.slice)
            if text:
                s = node.slice
                sites.append(BugSite("bound", s.lineno, s.col_offset, s.end_col_offset,
                                     (f"{text} + 1", f"{text} - 1")))  # fmt: skip
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in local:
            others = tuple(n for n in local if n != node.id)
            if others and _segment(lines, node):
                sites.append(BugSite("variable", node.lineno, node.col_offset,
                                     node.end_col_offset, others))  # fmt: skip
    found = [s for s in sites if s is not None]
    return sorted(found, key=lambda s: (s.line, s.start, s.kind, s.end))


def apply_site(source: str, site: BugSite, option: str) -> str:
    lines = source.splitlines()
    raw = lines[site.line - 1].encode()
    lines[site.line - 1] = (raw[: site.start] + option.encode() + raw[site.end :]).decode()
    return "\n".join(lines)


def inject_bug(source: str, rng: np.random.Generator) -> tuple[str, Bug] | None:
    """One synthetic bug on one line: a kind chosen uniformly, then a site, then a variant.

    Returns None when no site gives a program that parses and differs from the original.
    The same source and generator state always give the same bug.
    """
    source = source.strip("\n")
    sites = bug_sites(source)
    original = ast.dump(ast.parse(source))
    by_kind = {k: [s for s in sites if s.kind == k] for k in BUG_KINDS}
    kinds = [k for k in BUG_KINDS if by_kind[k]]
    while kinds:
        kind = kinds.pop(int(rng.integers(len(kinds))))
        candidates = by_kind[kind]
        for index in rng.permutation(len(candidates)):
            site = candidates[int(index)]
            option = site.options[int(rng.integers(len(site.options)))]
            buggy = apply_site(source, site, option)
            try:
                changed = ast.dump(ast.parse(buggy)) != original
            except SyntaxError:
                continue
            if changed:
                before = source.splitlines()[site.line - 1]
                return buggy, Bug(kind, site.line, before, buggy.splitlines()[site.line - 1])
    return None
