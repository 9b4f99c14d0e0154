"""Answers as line edits: applying them, refusing bad ones with a reason, and making them."""

from __future__ import annotations

import pytest

from coral.benchmark.edits import EditError, Hunk, apply_edit, format_hunks, make_hunks, parse_edit
from coral.benchmark.extract import extract

BUGGY = (
    "import math\n"
    "\n"
    "\n"
    "def area(r, scale):\n"
    "    if r < 0:\n"
    "        return None\n"
    "    total = math.pi * r * r\n"
    "    return total - scale\n"
)
FIXED = BUGGY.replace("    if r < 0:", "    if r <= 0:").replace("total - scale", "total * scale")


def test_applying_an_edit_gives_the_fixed_file_byte_for_byte() -> None:
    answer = "@@ 5\n    if r <= 0:\n@@ 8\n    return total * scale\n```"
    result = extract(answer, "area", BUGGY)
    assert result.method == "edit" and result.reason == ""
    assert result.source == FIXED


def test_ranges_deletions_and_insertions() -> None:
    replaced = apply_edit(BUGGY, parse_edit("@@ 7-8\n    return math.pi * r * r * scale\n"))
    assert replaced.splitlines()[-1] == "    return math.pi * r * r * scale"
    assert len(replaced.splitlines()) == 7
    deleted = apply_edit(BUGGY, parse_edit("@@ 5-6\n"))
    assert "if r < 0" not in deleted and deleted.count("\n") == 6
    inserted = apply_edit(BUGGY, parse_edit("@@ 1\nimport math\nimport os\n"))
    assert inserted.startswith("import math\nimport os\n\n\ndef area")


def test_prose_before_and_a_fenced_block_are_fine() -> None:
    raw = "The comparison is wrong.\n```\n@@ 5\n    if r <= 0:\n```\nThat is all."
    result = extract(raw, "area", BUGGY)
    assert result.method == "edit"
    assert result.source.splitlines()[4] == "    if r <= 0:"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("@@ 9\n    return 0\n", "past the end (the program has 8 lines)"),
        ("@@ 7-12\n    return 0\n", "past the end"),
        ("@@ 0\nx = 1\n", "must run forwards from 1"),
        ("@@ 6-5\nx = 1\n", "must run forwards from 1"),
        ("@@ -3,1 +3,1 @@\n-    if r < 0:\n+    if r <= 0:\n", "is not `@@ N` or `@@ N-M`"),
        ("@@ line five\n    if r <= 0:\n", "is not `@@ N` or `@@ N-M`"),
        ("@@ 6\n        return 0\n@@ 5\n    if r <= 0:\n", "overlaps or precedes"),
        ("@@ 5-6\n    pass\n@@ 6\n    pass\n", "overlaps or precedes"),
    ],
)
def test_malformed_or_out_of_range_edit_fails_with_its_reason(answer: str, reason: str) -> None:
    result = extract(answer + "```\n", "area", BUGGY)
    assert result.method == "bad_edit"
    assert reason in result.reason
    # The candidate is what was written (it never parses), never the buggy program echoed.
    assert result.source.startswith("@@") and result.source != BUGGY
    with pytest.raises(SyntaxError):
        compile(result.source, "candidate", "exec")


def test_an_edit_without_a_buggy_program_fails() -> None:
    result = extract("@@ 5\n    if r <= 0:\n", "area")
    assert result.method == "bad_edit" and "needs the buggy program" in result.reason


def test_whole_program_answers_still_work() -> None:
    result = extract("```python\n" + FIXED + "```\n", "area", BUGGY)
    assert result.method == "code"
    assert "if r <= 0:" in result.source and "total * scale" in result.source


def test_no_header_is_an_error() -> None:
    with pytest.raises(EditError, match="no hunk header"):
        parse_edit("    if r <= 0:\n")


def test_blank_lines_end_a_hunk() -> None:
    assert parse_edit("@@ 2\nx = 1\n\n\n@@ 4\n\n") == [Hunk(2, 2, ("x = 1",)), Hunk(4, 4, ())]


@pytest.mark.parametrize(
    "fixed",
    [
        FIXED,
        BUGGY.replace("    return None\n", ""),  # a line deleted
        BUGGY.replace("    total =", "    r = abs(r)\n    total ="),  # a line inserted
        "# header\n" + BUGGY,  # inserted at the very top
        BUGGY + "\n\nprint(area(1, 2))\n",  # lines added at the end, after blank ones
        BUGGY.replace("    return None\n", "\n"),  # a line replaced by a blank one
    ],
)
def test_made_hunks_reproduce_the_fix(fixed: str) -> None:
    hunks = make_hunks(BUGGY, fixed)
    assert hunks
    assert apply_edit(BUGGY, parse_edit(format_hunks(hunks))) == fixed.strip("\n") + "\n"


def test_a_one_line_fix_is_one_one_line_hunk() -> None:
    assert format_hunks(make_hunks(BUGGY, FIXED)) == "@@ 5\n    if r <= 0:\n@@ 8\n    return total * scale\n"
