"""The one prompt template shared by training and evaluation."""

from __future__ import annotations

import pytest
from conftest import REPO

from coral.benchmark.extract import extract
from coral.benchmark.loader import load_benchmark
from coral.benchmark.prompts import END_OF_ANSWER, build_prompt, build_target
from coral.errors import BenchmarkError

BUGGY = "def gcd(a, b):\n    if b == 0:\n        return a\n    return gcd(a % b, b)\n"
FIXED = BUGGY.replace("gcd(a % b, b)", "gcd(b, a % b)") + '\n\n"""\nEuclid.\n"""\n'
BENCHES = [REPO / "tests" / "fixtures" / "mini_bench"]
if (REPO / "data" / "problems" / "python_programs").is_dir():
    BENCHES.append(REPO / "data" / "problems")


@pytest.mark.parametrize("style", ["base", "instruct"])
def test_prompt_shows_name_and_numbered_code_and_opens_a_fence(style: str) -> None:
    prompt = build_prompt("gcd", BUGGY, style)
    assert "`gcd`" in prompt and "@@ N" in prompt
    assert "```python\n1| def gcd(a, b):\n2|     if b == 0:\n" in prompt
    assert "4|     return gcd(a % b, b)\n```" in prompt
    assert prompt.endswith("```\n")
    assert prompt == build_prompt("gcd", "\n" + BUGGY + "\n\n", style)


def test_line_numbers_align_and_blank_lines_carry_no_trailing_space() -> None:
    source = "\n".join(f"x{i} = {i}" for i in range(1, 10)) + "\n\ny = 0\n"
    prompt = build_prompt("f", source)
    assert " 9| x9 = 9\n10|\n11| y = 0\n```" in prompt


def test_styles_differ_and_default_is_base() -> None:
    base, instruct = build_prompt("gcd", BUGGY, "base"), build_prompt("gcd", BUGGY, "instruct")
    assert build_prompt("gcd", BUGGY) == base
    assert base.startswith("# Task:") and "[INST]" not in base
    assert instruct.startswith("[INST]") and "[/INST]" in instruct


def test_unknown_style_and_fence_in_source_are_rejected() -> None:
    with pytest.raises(ValueError, match="prompt style"):
        build_prompt("gcd", BUGGY, "chat")
    with pytest.raises(BenchmarkError, match="gcd: buggy program contains"):
        build_prompt("gcd", BUGGY + "s = '```'\n")
    with pytest.raises(BenchmarkError, match="fixed program contains"):
        build_target(BUGGY, FIXED + "s = '```'\n")
    with pytest.raises(BenchmarkError, match="no edit"):
        build_target(BUGGY, BUGGY)


def test_target_is_the_line_edit_then_the_closing_fence() -> None:
    # Lines added at the end belong to the hunk of the line before them.
    assert build_target(BUGGY, FIXED) == (
        '@@ 4\n    return gcd(b, a % b)\n\n\n"""\nEuclid.\n"""\n' + END_OF_ANSWER + "\n"
    )
    only_line = BUGGY.replace("gcd(a % b, b)", "gcd(b, a % b)")
    assert build_target(BUGGY, only_line) == "@@ 4\n    return gcd(b, a % b)\n" + END_OF_ANSWER + "\n"


@pytest.mark.parametrize("root", BENCHES, ids=lambda p: p.name)
@pytest.mark.parametrize("style", ["base", "instruct"])
def test_training_pair_round_trips_through_extraction(root, style: str) -> None:
    """What the model learns to write after the prompt extracts back to the reference fix, byte
    for byte (as the prompt numbers it: no blank lines at either end)."""
    for problem in load_benchmark(root):
        prompt = build_prompt(problem.name, problem.buggy_source, style)
        answer = build_target(problem.buggy_source, problem.correct_source) + "### Buggy\nmore text"
        result = extract(answer, problem.name, problem.buggy_source)
        assert result.method == "edit", problem.name
        assert result.source == problem.correct_source.strip("\n") + "\n", problem.name
        assert prompt.count("```") == 3  # opens, closes the buggy block, opens the answer
