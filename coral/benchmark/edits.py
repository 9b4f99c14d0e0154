"""Answers as line edits (docs/benchmark.md, "Answer format").

The prompt shows the buggy program with 1-based line numbers; an answer names the lines to
replace and gives their new text, so a model changes one token without copying the program:

    @@ 7                replace line 7 with the lines that follow (up to the next `@@` or the end)
    @@ 7-9              replace lines 7 to 9
    @@ 7 (no lines)     delete line 7

Several hunks may follow one another, in increasing order and without overlap. To insert a line,
replace its neighbour with the neighbour plus the new line. Blank lines at the end of a hunk are
ignored (they are what separates hunks). Lines are counted in the program as the prompt shows
it: newlines normalised and blank lines at both ends removed (`program_lines`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

HUNK_MARK = "@@"
_HEADER = re.compile(r"^@@ ?(\d+)(?: ?- ?(\d+))?\s*$")


class EditError(ValueError):
    """An answer that is not a well-formed edit of its program; the message says why."""


@dataclass(frozen=True)
class Hunk:
    first: int  # 1-based, inclusive
    last: int  # 1-based, inclusive
    lines: tuple[str, ...]  # the new text of lines first..last (empty: they are deleted)


def program_lines(source: str) -> list[str]:
    """The program's lines as the prompt numbers them."""
    return source.replace("\r\n", "\n").replace("\r", "\n").strip("\n").split("\n")


def number_lines(source: str) -> str:
    """`source` with each line prefixed by its number, right-aligned, and `| `."""
    lines = program_lines(source)
    width = len(str(len(lines)))
    return "\n".join(f"{n:>{width}}| {line}".rstrip() if line else f"{n:>{width}}|"
                     for n, line in enumerate(lines, 1))  # fmt: skip


def is_edit(text: str) -> bool:
    """Whether an answer segment holds an edit (some line starts with `@@`)."""
    return any(line.startswith(HUNK_MARK) for line in text.split("\n"))


def parse_edit(text: str) -> list[Hunk]:
    """The hunks of an edit answer; text before the first `@@` line is ignored (prose)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    start = next((i for i, line in enumerate(lines) if line.startswith(HUNK_MARK)), None)
    if start is None:
        raise EditError("no hunk header (a line `@@ N` or `@@ N-M`)")
    hunks: list[Hunk] = []
    header: tuple[int, int] | None = None
    body: list[str] = []
    for line in [*lines[start:], HUNK_MARK + " end"]:
        if not line.startswith(HUNK_MARK):
            body.append(line)
            continue
        if header is not None:
            while body and not body[-1].strip():
                body.pop()
            hunks.append(Hunk(header[0], header[1], tuple(body)))
        if line == HUNK_MARK + " end":
            break
        match = _HEADER.match(line)
        if match is None:
            raise EditError(f"hunk header {line[:60]!r} is not `@@ N` or `@@ N-M`")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else first
        if first < 1 or last < first:
            raise EditError(f"hunk header {line!r}: lines must run forwards from 1")
        header, body = (first, last), []
    return hunks


def apply_edit(source: str, hunks: list[Hunk]) -> str:
    """The program with the hunks applied, ending in one newline."""
    lines = program_lines(source)
    previous = 0
    for hunk in hunks:
        if hunk.last > len(lines):
            raise EditError(f"hunk @@ {_span(hunk)} is past the end (the program has {len(lines)} lines)")
        if hunk.first <= previous:
            raise EditError(f"hunk @@ {_span(hunk)} overlaps or precedes the one before it")
        previous = hunk.last
    out: list[str] = []
    at = 1
    for hunk in hunks:
        out += lines[at - 1 : hunk.first - 1]
        out += hunk.lines
        at = hunk.last + 1
    out += lines[at - 1 :]
    return "\n".join(out) + "\n"


def edit_answer(text: str, source: str) -> str:
    """Parse an edit answer and apply it to `source` (EditError says why it cannot be)."""
    return apply_edit(source, parse_edit(text))


def _span(hunk: Hunk) -> str:
    return str(hunk.first) if hunk.first == hunk.last else f"{hunk.first}-{hunk.last}"


def make_hunks(buggy: str, fixed: str) -> list[Hunk]:
    """The smallest hunks turning `buggy` into `fixed` (both as the prompt numbers them).

    An insertion becomes a replacement of the line above it (of line 1 at the very top), since
    the format only replaces; hunks that would then overlap are merged.
    """
    old, new = program_lines(buggy), program_lines(fixed)
    codes = difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes()
    spans: list[list[int]] = []
    for tag, i1, i2, _, _ in codes:
        if tag == "equal":
            continue
        a, b = (i1, i2) if i1 < i2 else ((i1 - 1, i1) if i1 > 0 else (0, 1))
        b = min(b, len(old))
        if spans and a < spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], b)
        else:
            spans.append([a, b])

    def to_new(x: int, end: bool) -> int:
        # Where buggy boundary x falls in the fixed program: inside an equal block it maps
        # one to one; at an opcode edge, the start of what follows (start) or its end (end).
        hits = [j1 + (x - i1) for tag, i1, i2, j1, _ in codes if tag == "equal" and i1 <= x <= i2]
        hits += [j1 for _, i1, _, j1, _ in codes if i1 == x] + [j2 for _, _, i2, _, j2 in codes if i2 == x]
        return max(hits) if end else min(hits)

    hunks = [Hunk(a + 1, b, tuple(new[to_new(a, False) : to_new(b, True)])) for a, b in spans]
    if any(h.lines and not h.lines[-1].strip() for h in hunks):
        # A hunk ending in a blank line would lose it when parsed: one hunk to the end instead
        # (the program's last line is never blank).
        a = spans[0][0]
        return [Hunk(a + 1, len(old), tuple(new[to_new(a, False) :]))]
    return hunks


def format_hunks(hunks: list[Hunk]) -> str:
    """The answer text of the hunks (each header, then its lines), ending in a newline."""
    out: list[str] = []
    for hunk in hunks:
        out.append(f"{HUNK_MARK} {_span(hunk)}")
        out += hunk.lines
    return "\n".join(out) + "\n"
