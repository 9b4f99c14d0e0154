"""The one prompt template shared by adapter training and evaluation.

Training pairs are (build_prompt(name, buggy), build_target(buggy, fixed)); evaluation feeds
build_prompt(name, buggy) and extracts the candidate from whatever the model writes after it
(coral.benchmark.extract). The prompt shows the buggy program with line numbers and asks for line
edits (coral.benchmark.edits, docs/benchmark.md "Answer format"); a whole corrected function is
accepted too. Both styles end with an opened ``` fence, so the answer starts at once and the
closing fence (END_OF_ANSWER) marks where it ends; the base style is plain text, the instruct
style wraps the request in [INST] ... [/INST] as Llama/CodeLlama instruct models expect.
"""

from __future__ import annotations

from typing import Literal, get_args

from coral.benchmark.edits import format_hunks, make_hunks, number_lines
from coral.errors import BenchmarkError

PromptStyle = Literal["base", "instruct"]
STYLES: tuple[str, ...] = get_args(PromptStyle)
FENCE = "```"
END_OF_ANSWER = FENCE  # the closing fence ends an answer; generation may stop there

_TASK = (
    "The Python function `{name}` below has exactly one buggy line. "
    "Answer with line edits: a line `@@ N` (or `@@ N-M`), then the new text of those lines."
)

_BASE = (
    "# Task: " + _TASK + "\n"
    "### Buggy\n{fence}python\n{buggy}\n{fence}\n"
    "### Edit\n{fence}\n"
)

_INSTRUCT = (
    "[INST] " + _TASK + " Reply with the edit in one code block.\n"
    "{fence}python\n{buggy}\n{fence} [/INST]\n"
    "{fence}\n"
)


def build_prompt(name: str, buggy_source: str, style: PromptStyle = "base") -> str:
    """The prompt for problem `name`; ends with an opened code fence for the answer."""
    if style not in STYLES:
        raise ValueError(f"prompt style must be one of {', '.join(STYLES)}, got {style!r}")
    _check_fence_free(name, buggy_source, "buggy program")
    template = _BASE if style == "base" else _INSTRUCT
    return template.format(name=name, buggy=number_lines(buggy_source), fence=FENCE)


def build_target(buggy_source: str, fixed_source: str) -> str:
    """The answer the model learns to produce after the prompt: the line edit that turns the
    buggy program into the fixed one, then the closing fence."""
    _check_fence_free("", fixed_source, "fixed program")
    hunks = make_hunks(buggy_source, fixed_source)
    if not hunks:
        raise BenchmarkError("buggy and fixed programs are the same: there is no edit to learn")
    return f"{format_hunks(hunks)}{END_OF_ANSWER}\n"


def _check_fence_free(name: str, source: str, what: str) -> None:
    # A fence inside the program would close the code block early and garble the prompt.
    if FENCE in source:
        label = f"{name}: " if name else ""
        raise BenchmarkError(f"{label}{what} contains {FENCE!r}, which would break the prompt")
