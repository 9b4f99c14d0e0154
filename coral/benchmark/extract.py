"""Turn raw model output into a candidate module defining the problem's function.

An answer holding line edits (a line starting with `@@`, coral.benchmark.edits) is applied to the
buggy program; an edit that is malformed, out of range or has no program to apply to is a
failed candidate: its text is returned as written (it starts with `@@`, so it never parses) with
the reason recorded, never the buggy program unchanged.

Otherwise the answer is whole code. Never executes anything: all checks go through `ast`.
Handles fenced code (```python or bare ```), bare code, prose before/after, a second fence or
junk after the function, an answer cut off before its closing fence, and an answer that is only
the function body (the signature is re-attached from the buggy program). The result keeps the
buggy program's imports, helper functions, classes and constants, unless the answer redefines
them, so it is a whole module.

When nothing usable is found the first non-empty piece of the output is returned as-is, so the
syntax objective scores what the model actually wrote instead of a repaired guess.

Total on any text: code nested past what Python's parser or the standard library's recursive
`ast` helpers take (`a+a+...` 3,000 deep, `~~~...x`, `not not ... x`) raises RecursionError or
MemoryError there, never out of here: such code does not parse, so it is kept as written and
fails its syntax (it aborted a run when it escaped a test job).
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from typing import Literal

from coral.benchmark.edits import EditError, edit_answer, is_edit

Method = Literal["edit", "bad_edit", "code", "body", "unparsed", "raw", "empty", "too_long"]

# Past this an answer is not analysed (nor linted, nor run): a 10 MB answer took the trusted side
# 142 s and 3.7 GB. A model's answer stays far below it: max_new_tokens is at most 8,192 (config),
# and tokens average a few characters.
MAX_ANSWER_CHARS = 200_000

_FENCE = re.compile(r"^ {0,3}(```|~~~)")
# Column-0 lines worth trying as the start of code; prose ("Here is the fix:") is skipped.
_CODE_START = re.compile(
    r"""^(?:@|\#|[rRbBuUfF]{0,2}["']|(?:async\s+)?def\s|class\s|import\s|from\s|if\s|for\s
    |while\s|try\s*:|with\s|[A-Za-z_][\w.]*\s*(?:[=:(\[,]|[-+*/%&|^@]=|<<=|>>=|//=|\*\*=))""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Part:
    """One top-level statement kept from code: an import, def, class or constant ("other":
    further statements of the buggy program, such as a try/except import)."""

    kind: Literal["import", "def", "assign", "other"]
    names: tuple[str, ...]  # defined names (empty for imports)
    text: str
    node: ast.stmt | None  # None for a def that does not parse (kept verbatim)


@dataclass(frozen=True)
class Extraction:
    source: str  # the candidate module ("" when the output was empty)
    method: Method  # how it was found: edit applied, parsed code, re-attached body, ... raw text
    reason: str = ""  # why a bad_edit failed, or why the answer could not be analysed


def extract_candidate(raw: str, name: str, buggy_source: str | None = None) -> str:
    """The candidate module for problem `name` found in `raw` (see module docstring)."""
    return extract(raw, name, buggy_source).source


def extract(raw: str, name: str, buggy_source: str | None = None) -> Extraction:
    """The candidate module and how it was found (for analysis of what models write)."""
    if not name.isidentifier():
        raise ValueError(f"problem name must be a Python identifier, got {name!r}")
    if len(raw) > MAX_ANSWER_CHARS:
        return Extraction("", "too_long", f"answer of {len(raw):,} characters; at most "
                                          f"{MAX_ANSWER_CHARS:,} are analysed")
    segments = _segments(_normalise_newlines(raw))
    try:
        return _extract(segments, name, buggy_source)
    except (RecursionError, MemoryError) as exc:
        # The parsers below are guarded; this is the net for any recursive helper that is not.
        text = next((s.strip("\n") + "\n" for s in segments if s.strip()), "")
        return Extraction(text, "raw" if text else "empty", f"too deeply nested to analyse ({type(exc).__name__})")


def _extract(segments: list[str], name: str, buggy_source: str | None) -> Extraction:
    edit = next((s for s in segments if is_edit(s)), None)
    if edit is not None:
        return _apply(edit, buggy_source)
    buggy = _buggy_info(buggy_source, name)
    found: list[list[Part]] = []
    for segment in segments:
        parts = _parts_with(segment, name)
        if parts is not None:
            found.append(parts)
    parsed = [p for p in found if _target(p, name).node is not None]
    if parsed:
        # An answer that first echoes the buggy code and then fixes it: take the changed one.
        changed = [p for p in parsed if not _same_function(_target(p, name).node, buggy)]
        return Extraction(_assemble((changed or parsed)[0], name, buggy), "code")
    if buggy is not None:
        for segment in segments:
            parts = _body_only(segment, name, buggy)
            if parts is not None:
                return Extraction(_assemble(parts, name, buggy), "body")
    if found:
        return Extraction(_assemble(found[0], name, buggy), "unparsed")
    for segment in segments:
        if segment.strip():
            return Extraction(segment.strip("\n") + "\n", "raw")
    return Extraction("", "empty")


def _apply(segment: str, buggy_source: str | None) -> Extraction:
    lines = segment.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("@@"))
    written = "\n".join(lines[start:]).strip("\n") + "\n"
    if buggy_source is None:
        return Extraction(written, "bad_edit", "an edit needs the buggy program to apply to")
    try:
        return Extraction(edit_answer(segment, buggy_source), "edit")
    except EditError as exc:
        return Extraction(written, "bad_edit", str(exc))


# ------------------------------------------------------------------ segments and parts


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _segments(text: str) -> list[str]:
    """Text between fence lines. Unclosed fences simply run to the end (truncated output)."""
    segments: list[list[str]] = [[]]
    for line in text.split("\n"):
        if _FENCE.match(line):
            segments.append([])
        else:
            segments[-1].append(line)
    return ["\n".join(lines) for lines in segments]


def _parts_with(segment: str, name: str) -> list[Part] | None:
    """Code parts of a segment if it defines `name` at top level (also after dedenting)."""
    if not re.search(rf"\bdef\s+{re.escape(name)}\s*\(", segment):
        return None  # cheap test first: most prose segments end here
    dedented = textwrap.dedent(segment)
    for text in (segment, dedented) if dedented != segment else (segment,):
        parts = _code_parts(text)
        if not any(name in p.names and p.kind == "def" for p in parts):
            parts += _unparsed_def(text, name)
        if any(name in p.names and p.kind == "def" for p in parts):
            return parts
    return None


def _code_parts(text: str) -> list[Part]:
    """Keepable top-level statements of a piece of output, skipping prose and junk.

    Code can only start at a column-0 line, so the text is cut there ("bounds"). From each
    plausible start the span grows bound by bound while that can still help, and the longest
    span that parses is kept; a function with column-0 lines inside (a docstring) grows past
    them. Parsing stops for good after _PARSE_BUDGET_LINES lines in all, so degenerate output
    (a loop of unclosed brackets) costs milliseconds, not seconds.
    """
    lines = text.split("\n")
    bounds = [i for i, line in enumerate(lines) if line[:1].strip()] + [len(lines)]
    parts: list[Part] = []
    budget = _PARSE_BUDGET_LINES
    b = 0
    while b < len(bounds) - 1 and budget > 0:
        start, nxt = bounds[b], b + 1
        if _CODE_START.match(lines[start]):
            best: tuple[int, ast.Module] | None = None
            for e in range(b + 1, len(bounds)):
                span = lines[start : bounds[e]]
                budget -= len(span)
                tree, can_grow = _try_parse(span)
                if tree is not None:
                    best = (e, tree)
                if not can_grow or budget <= 0:
                    break
            if best is not None:
                nxt, tree = best
                parts += _keepable(tree, lines[start : bounds[nxt]])
            elif _opens_string(lines[start]):
                break  # an unterminated string runs to the end: nothing after it is code
        b = nxt
    return parts


_PARSE_BUDGET_LINES = 20_000
# Errors that more lines may cure (an open bracket, string or block); any other error before
# the span's last line stays whatever follows, so growing further is pointless.
_CURABLE = ("never closed", "unterminated triple-quoted", "expected an indented block", "EOF")


def _try_parse(span: list[str]) -> tuple[ast.Module | None, bool]:
    """(tree or None, whether a longer span could still parse)."""
    try:
        return ast.parse("\n".join(span)), True
    except SyntaxError as exc:
        at_end = exc.lineno is None or exc.lineno >= len(span)
        return None, at_end or any(key in exc.msg for key in _CURABLE)
    except (ValueError, RecursionError, MemoryError):  # NUL bytes, or nested past the parser's
        return None, False  # limits: no longer span will parse either


def _opens_string(line: str) -> bool:
    return bool(re.match(r"""^[rRbBuUfF]{0,2}(\"\"\"|\'\'\')""", line))


def _keepable(tree: ast.Module, lines: list[str], keep_other: bool = False) -> list[Part]:
    """Imports, defs, classes and constants of a parsed span. Other statements (prints,
    asserts, docstrings) are not the fix; the buggy program keeps them when `keep_other`,
    except bare expressions and `if __name__ == "__main__":` blocks."""
    parts = []
    for node in tree.body:
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        text = "\n".join(lines[first - 1 : node.end_lineno]).rstrip()
        if isinstance(node, ast.Import | ast.ImportFrom):
            parts.append(Part("import", (), text, node))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            parts.append(Part("def", (node.name,), text, node))
        elif isinstance(node, ast.Assign | ast.AnnAssign) and _assigned(node) is not None:
            parts.append(Part("assign", _assigned(node) or (), text, node))
        elif keep_other and not isinstance(node, ast.Expr) and not _is_main_guard(node):
            parts.append(Part("other", (), text, node))
    return parts


def _assigned(node: ast.Assign | ast.AnnAssign) -> tuple[str, ...] | None:
    """Names bound by `a = ...`, `a = b = ...`, `a, b = ...`; None for `x[0] = ...` and such."""
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    names: list[str] = []
    for target in targets:
        elts = target.elts if isinstance(target, ast.Tuple | ast.List) else [target]
        if not all(isinstance(e, ast.Name) for e in elts):
            return None
        names += [e.id for e in elts if isinstance(e, ast.Name)]
    return tuple(names)


def _is_main_guard(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and any(
        isinstance(n, ast.Constant) and n.value == "__main__" for n in ast.walk(node.test))


def _unparsed_def(text: str, name: str) -> list[Part]:
    """`def name(` that never parses (a typo, or cut off by max_new_tokens): kept verbatim up
    to the next column-0 line that looks like code, so the syntax objective sees it."""
    lines = text.split("\n")
    head = re.compile(rf"^(?:async\s+)?def\s+{re.escape(name)}\s*\(")
    for i, line in enumerate(lines):
        if head.match(line):
            end = next(
                (j for j in range(i + 1, len(lines)) if lines[j][:1].strip()
                 and _CODE_START.match(lines[j])),
                len(lines),
            )
            return [Part("def", (name,), "\n".join(lines[i:end]).rstrip(), None)]
    return []


def _parse(text: str) -> ast.Module | None:
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # NUL bytes; nested too deep
        return None


def _target(parts: list[Part], name: str) -> Part:
    return next(p for p in parts if p.kind == "def" and name in p.names)


# ------------------------------------------------------------------ the buggy program


@dataclass(frozen=True)
class _Buggy:
    parts: list[Part]
    function: ast.FunctionDef | ast.AsyncFunctionDef
    header: str  # decorators and signature, up to where the body starts
    body_indent: int


def _buggy_info(source: str | None, name: str) -> _Buggy | None:
    if source is None:
        return None
    source = _normalise_newlines(source)
    tree = _parse(source)
    if tree is None:
        return None
    lines = source.split("\n")
    function = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
         and n.name == name),
        None,
    )
    if function is None:
        return None
    first = min([function.lineno] + [d.lineno for d in function.decorator_list])
    body0 = function.body[0]
    header_lines = lines[first - 1 : body0.lineno - 1]
    same_line = lines[body0.lineno - 1][: body0.col_offset]
    if same_line.strip():  # `def f(x): return x`: the signature ends mid-line
        header_lines.append(same_line.rstrip())
    body_indent = body0.col_offset if not same_line.strip() else function.col_offset + 4
    header = "\n".join(header_lines).rstrip()
    return _Buggy(_keepable(tree, lines, keep_other=True), function, header, body_indent)


def _same_function(node: ast.stmt | None, buggy: _Buggy | None) -> bool:
    return buggy is not None and node is not None and _shape(node) == _shape(buggy.function)


def _shape(tree: ast.AST) -> list[tuple[object, ...]]:
    """The tree as ast.dump sees it (types and fields, no positions), breadth first without
    recursion: ast.dump recurses in Python and fails on code the parser took (2,000 deep)."""
    shape: list[tuple[object, ...]] = []
    for node in ast.walk(tree):
        fields: list[object] = [type(node).__name__]
        for _, value in ast.iter_fields(node):
            if isinstance(value, list):
                fields.append(tuple(_leaf(v) for v in value))
            else:
                fields.append(_leaf(value))
        shape.append(tuple(fields))
    return shape


def _leaf(value: object) -> object:
    # With its type: 1, 1.0 and True are equal values but different constants.
    return type(value).__name__ if isinstance(value, ast.AST) else (type(value).__name__, value)


def _body_only(segment: str, name: str, buggy: _Buggy) -> list[Part] | None:
    """An answer that starts with the indented body: put the buggy signature back on top."""
    lines = segment.split("\n")
    code = [i for i, line in enumerate(lines) if line.strip()]
    if not code or not lines[code[0]][:1].isspace():
        return None
    end = next((i for i in code if not lines[i][:1].isspace()), len(lines))
    body = textwrap.dedent("\n".join(lines[code[0] : end]))
    body = textwrap.indent(body, " " * buggy.body_indent)
    function = f"{buggy.header}\n{body.rstrip()}"
    tree = _parse(function)
    if tree is None:
        return None
    rest = _code_parts("\n".join(lines[end:]))
    target = Part("def", (name,), function, tree.body[0])
    return [target] + [p for p in rest if not (p.kind == "def" and name in p.names)]


# ------------------------------------------------------------------ assembly


def _assemble(parts: list[Part], name: str, buggy: _Buggy | None) -> str:
    """The buggy module's layout with the answer's definitions swapped in (first wins)."""
    own: list[Part] = []
    defined: set[str] = set()
    imports: list[str] = []
    for part in parts:
        if part.kind == "import":
            if part.text not in imports:
                imports.append(part.text)
        elif not defined.intersection(part.names):
            own.append(part)
            defined.update(part.names)
    if buggy is None:
        body = [p.text for p in own]
        return _join(imports, body)
    used: set[int] = set()
    body = []
    buggy_imports = [p.text for p in buggy.parts if p.kind == "import"]
    for bpart in buggy.parts:
        if bpart.kind == "import":
            continue
        if name in bpart.names:
            # Answer-only helpers and constants go just before the function that needs them.
            for i, part in enumerate(own):
                if not _defines_buggy_name(part, buggy) and name not in part.names:
                    body.append(part.text)
                    used.add(i)
        replacement = next(
            (i for i, p in enumerate(own) if i not in used and set(p.names) & set(bpart.names)),
            None,
        )
        if replacement is None:
            body.append(bpart.text)
        else:
            body.append(own[replacement].text)
            used.add(replacement)
    body += [p.text for i, p in enumerate(own) if i not in used]
    all_imports = buggy_imports + [t for t in imports if t not in buggy_imports]
    return _join(all_imports, body)


def _defines_buggy_name(part: Part, buggy: _Buggy) -> bool:
    return any(set(part.names) & set(b.names) for b in buggy.parts if b.kind != "import")


def _join(imports: list[str], body: list[str]) -> str:
    chunks = (["\n".join(imports)] if imports else []) + body
    return "\n\n\n".join(chunks) + "\n" if chunks else ""
