"""The one prompt template shared by adapter training and evaluation.

Training pairs are (build_prompt(buggy), build_target(fixed)); evaluation feeds build_prompt(buggy)
and extracts the function from whatever the model writes after it (coral.benchmark.extract).
Both styles end with an opened ```python fence, so the model's answer starts with code and the
closing fence (END_OF_ANSWER) marks where it ends; the base style is plain text, the instruct
style wraps the request in [INST] ... [/INST] as Llama/CodeLlama instruct models expect.
"""

from __future__ import annotations

import ast
from typing import Literal, get_args

from coral.errors import BenchmarkError

PromptStyle = Literal["base", "instruct"]
STYLES: tuple[str, ...] = get_args(PromptStyle)
FENCE = "```"
END_OF_ANSWER = FENCE  # the closing fence ends an answer; generation may stop there

_TASK = (
    "The Python function `{name}` below has exactly one buggy line. "
    "Write the whole corrected function, keeping its name and signature."
)

_BASE = (
    "# Task: " + _TASK + "\n"
    "### Buggy\n{fence}python\n{buggy}\n{fence}\n"
    "### Fixed\n{fence}python\n"
)

_INSTRUCT = (
    "[INST] " + _TASK + " Reply with it in one Python code block.\n"
    "{fence}python\n{buggy}\n{fence} [/INST]\n"
    "{fence}python\n"
)


def build_prompt(name: str, buggy_source: str, style: PromptStyle = "base") -> str:
    """The prompt for problem `name`; ends with an opened code fence for the answer."""
    if style not in STYLES:
        raise ValueError(f"prompt style must be one of {', '.join(STYLES)}, got {style!r}")
    _check_fence_free(name, buggy_source, "buggy program")
    template = _BASE if style == "base" else _INSTRUCT
    return template.format(name=name, buggy=buggy_source.strip("\n"), fence=FENCE)


def build_target(fixed_source: str) -> str:
    """The answer the model learns to produce after the prompt: the fix, then the closing fence.

    Module-level bare strings (QuixBugs puts each problem's description in one after the code)
    are left out: the prompt already shows them, and extraction drops them from answers anyway,
    so learning to repeat them would only spend max_new_tokens.
    """
    _check_fence_free("", fixed_source, "fixed program")
    code = strip_module_strings(fixed_source).strip("\n")
    return f"{code}\n{END_OF_ANSWER}\n"


def strip_module_strings(source: str) -> str:
    """`source` without top-level string statements; unchanged if it does not parse."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    lines = source.splitlines(keepends=True)
    strings, others = [], []
    for node in tree.body:
        span = range(node.lineno - 1, node.end_lineno or node.lineno)
        is_string = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        (strings if is_string and isinstance(node.value.value, str) else others).append(span)
    kept_lines = {i for span in others for i in span}
    # A string sharing a line with other code (`"s"; x = 1`) stays, so no code is lost.
    drop = {i for span in strings if not kept_lines.intersection(span) for i in span}
    # Collapse the blank lines the removal leaves behind into at most two in a row.
    kept = "".join(line for i, line in enumerate(lines) if i not in drop)
    while "\n\n\n\n" in kept:
        kept = kept.replace("\n\n\n\n", "\n\n\n")
    return kept


def _check_fence_free(name: str, source: str, what: str) -> None:
    # A fence inside the program would close the code block early and garble the prompt.
    if FENCE in source:
        label = f"{name}: " if name else ""
        raise BenchmarkError(f"{label}{what} contains {FENCE!r}, which would break the prompt")
