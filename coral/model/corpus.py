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
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coral.benchmark.loader import CORRECT, PROGRAMS, problem_names, read_text
from coral.benchmark.mutations import BUG_CLASSES, Site, mutation_sites
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
    train_sources = [(problems_root, name) for name in train] if problems_root is not None else []
    for root, name in train_sources:
        texts = []
        for folder in (PROGRAMS, CORRECT):
            path = root / folder / f"{name}.py"
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

# The bug classes and operators are those of `coral bench mutate` (coral.benchmark.mutations), so the
# tiny model trains on the kind of bug the held-out instances carry. mutations.mutants() lists every
# mutation of a program (hundreds of parses); here one is drawn lazily: a class uniformly among
# those the function offers (mutate's instances go round-robin over classes too), then a site.
BUG_KINDS = BUG_CLASSES


@dataclass(frozen=True)
class Bug:
    kind: str  # one of coral.benchmark.mutations.BUG_CLASSES
    line: int  # 1-based line of the function that changed
    before: str
    after: str  # "" for a deleted line


def inject_bug(source: str, rng: np.random.Generator,
               allowed: Collection[str] = BUG_CLASSES) -> tuple[str, Bug] | None:  # fmt: skip
    """One bug of one class on one line of `source` (a class drawn uniformly among the `allowed`
    ones it offers, then a site); the result parses and its syntax tree differs from the original.
    None when no mutation does. The same source and generator state give the same bug (and with
    every class allowed, the same draws as before `allowed` existed)."""
    source = source.strip("\n") + "\n"
    parsed, sites = mutation_sites(source)
    original = ast.dump(parsed.tree)
    by_class: dict[str, list[Site]] = {c: [] for c in BUG_CLASSES}
    for site in sites:
        by_class[site.bug_class].append(site)
    classes = [c for c in BUG_CLASSES if by_class[c] and c in allowed]
    while classes:
        kind = classes.pop(int(rng.integers(len(classes))))
        options = by_class[kind]
        for index in rng.permutation(len(options)):
            site = options[int(index)]
            text = parsed.apply(site)
            if text is None:
                continue
            try:
                if ast.dump(ast.parse(text)) == original:
                    continue
            except SyntaxError:
                continue
            line = site.node.lineno
            before = parsed.lines[line - 1].rstrip("\n")
            after = "" if site.new is None else text.splitlines()[line - 1]
            return text, Bug(kind, line, before, after)
    return None
