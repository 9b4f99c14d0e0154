"""Load a benchmark directory in the QuixBugs layout into `Problem`s.

    ROOT/python_programs/NAME.py          buggy program (defines function NAME)
    ROOT/correct_python_programs/NAME.py  reference fix
    ROOT/json_testcases/NAME.json         optional: one `[args, expected]` JSON value per line
    ROOT/python_testcases/test_NAME.py    optional: pytest file (the only tests without JSON)
    ROOT/python_testcases/node.py, load_testdata.py   support modules for pytest files

Every problem needs JSON cases or a pytest file. The first missing or malformed file raises
BenchmarkError with one line naming it; nothing is skipped silently except the support and
test modules QuixBugs keeps next to its programs (node.py, *_test.py).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from coral.benchmark.problem import JsonCase, Problem
from coral.errors import BenchmarkError

PROGRAMS = "python_programs"
CORRECT = "correct_python_programs"
JSON_CASES = "json_testcases"
PYTEST_CASES = "python_testcases"
# Modules QuixBugs keeps in python_programs/ that are not problems.
SUPPORT_MODULES = frozenset({"node", "load_testdata", "conftest", "__init__"})
# Files a pytest-style problem's test may import, looked up in python_testcases/ first, then
# python_programs/ (the real QuixBugs has node.py in both).
SUPPORT_FILES = ("node.py", "load_testdata.py")


def load_benchmark(root: Path | str) -> list[Problem]:
    """All problems of the benchmark at `root`, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise BenchmarkError(f"benchmark directory not found: {root}")
    programs = root / PROGRAMS
    if not programs.is_dir():
        raise BenchmarkError(f"{root}: missing {PROGRAMS}/ directory")
    if not (root / CORRECT).is_dir():
        raise BenchmarkError(f"{root}: missing {CORRECT}/ directory")
    names = problem_names(programs)
    if not names:
        raise BenchmarkError(f"{programs}: no problem programs (*.py) found")
    return [_load_problem(root, name) for name in names]


def problem_names(programs: Path) -> list[str]:
    """Sorted problem names in python_programs/, without support and test modules."""
    names = []
    for path in sorted(programs.glob("*.py")):
        stem = path.stem
        if stem in SUPPORT_MODULES or stem.endswith("_test") or stem.startswith("test_"):
            continue
        if not stem.isidentifier():
            raise BenchmarkError(f"{path}: file name is not a valid Python module name")
        names.append(stem)
    return names


def _load_problem(root: Path, name: str) -> Problem:
    buggy_path = root / PROGRAMS / f"{name}.py"
    correct_path = root / CORRECT / f"{name}.py"
    if not correct_path.is_file():
        raise BenchmarkError(f"{buggy_path}: no reference fix at {correct_path}")
    buggy = read_text(buggy_path)
    correct = read_text(correct_path)
    _check_defines(buggy_path, buggy, name)
    _check_defines(correct_path, correct, name)

    json_path = root / JSON_CASES / f"{name}.json"
    cases = load_json_cases(json_path) if json_path.is_file() else None
    test_path = root / PYTEST_CASES / f"test_{name}.py"
    pytest_source = read_text(test_path) if test_path.is_file() else None
    if cases is None and pytest_source is None:
        raise BenchmarkError(
            f"{buggy_path}: no tests (neither {json_path} nor {test_path} exists)"
        )
    support: dict[str, str] = {}
    if pytest_source is not None:  # the test runs as written: it needs its helpers
        support = _support_files(root, test_path, pytest_source)
    return Problem(
        name=name,
        buggy_source=buggy,
        correct_source=correct,
        json_cases=cases,
        pytest_source=pytest_source,
        support_files=support,
    )


def read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BenchmarkError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BenchmarkError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None


def parse_program(path: Path, source: str) -> ast.Module:
    """The file's syntax tree, or one BenchmarkError line saying why it has none."""
    try:
        return ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        where = f" line {exc.lineno}:" if exc.lineno is not None else ""
        raise BenchmarkError(f"{path}:{where} syntax error ({exc.msg})") from None
    except ValueError as exc:  # NUL bytes
        raise BenchmarkError(f"{path}: not Python source ({exc})") from None
    except (RecursionError, MemoryError):
        raise BenchmarkError(f"{path}: nested too deeply for Python's parser") from None


def _check_defines(path: Path, source: str, name: str) -> None:
    """The program must parse and define a top-level function `name` (what tests import)."""
    tree = parse_program(path, source)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            return
    raise BenchmarkError(f"{path}: does not define a top-level function {name}()")


def parse_json(path: Path, text: str, lineno: int | None = None) -> Any:
    """JSON from a benchmark file, or one BenchmarkError line naming the file (and line)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        line = lineno if lineno is not None else exc.lineno
        raise BenchmarkError(f"{path}: line {line}: invalid JSON ({exc.msg})") from None
    except (RecursionError, ValueError) as exc:  # ValueError: an integer past the digit limit
        where = f" line {lineno}:" if lineno is not None else ""
        why = "JSON nested too deeply to read" if isinstance(exc, RecursionError) else \
            f"unreadable JSON value ({str(exc).split(':')[0]})"
        raise BenchmarkError(f"{path}:{where} {why}") from None


def load_json_cases(path: Path) -> tuple[JsonCase, ...]:
    """Cases of a json_testcases file. Blank lines are skipped; `index` counts cases from 0.

    A line is `[args, expected]`; QuixBugs writes a single non-list argument bare
    (`[127, 7]` means bitcount(127) == 7), so a non-list `args` becomes `[args]`.
    """
    text = read_text(path)
    cases: list[JsonCase] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        value: Any = parse_json(path, line, lineno)
        if not isinstance(value, list) or len(value) != 2:
            raise BenchmarkError(
                f"{path}: line {lineno}: expected a two-element list [args, expected], "
                f"got {_preview(value)}"
            )
        args, expected = value
        bare = not isinstance(args, list)
        if bare:
            args = [args]
        cases.append(JsonCase(index=len(cases), args=args, expected=expected, bare=bare))
    if not cases:
        raise BenchmarkError(f"{path}: no test cases (file is empty)")
    return tuple(cases)


def _support_files(root: Path, test_path: Path, pytest_source: str) -> dict[str, str]:
    """node.py / load_testdata.py for a pytest-style problem; a needed one that is absent fails."""
    imported = _imported_modules(test_path, pytest_source)
    files: dict[str, str] = {}
    for file_name in SUPPORT_FILES:
        for folder in (PYTEST_CASES, PROGRAMS):
            path = root / folder / file_name
            if path.is_file():
                files[file_name] = read_text(path)
                break
        else:
            if file_name.removesuffix(".py") in imported:
                raise BenchmarkError(
                    f"{test_path}: imports {file_name.removesuffix('.py')} but "
                    f"{root / PYTEST_CASES / file_name} does not exist"
                )
    return files


def _imported_modules(path: Path, source: str) -> set[str]:
    tree = parse_program(path, source)
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module.split(".")[0])
    return modules


def _preview(value: Any, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
