"""The one prompt template shared by training and evaluation."""

from __future__ import annotations

import ast

import pytest
from conftest import REPO

from coral.benchmark.extract import extract_candidate
from coral.benchmark.loader import load_benchmark
from coral.benchmark.prompts import END_OF_ANSWER, build_prompt, build_target, strip_module_strings
from coral.errors import BenchmarkError

BUGGY = "def gcd(a, b):\n    if b == 0:\n        return a\n    return gcd(a % b, b)\n"
FIXED = BUGGY.replace("gcd(a % b, b)", "gcd(b, a % b)") + '\n\n"""\nEuclid.\n"""\n'
BENCHES = [REPO / "tests" / "fixtures" / "mini_bench"]
if (REPO / "data" / "problems" / "python_programs").is_dir():
    BENCHES.append(REPO / "data" / "problems")


@pytest.mark.parametrize("style", ["base", "instruct"])
def test_prompt_shows_name_and_code_and_opens_a_fence(style: str) -> None:
    prompt = build_prompt("gcd", BUGGY, style)
    assert "`gcd`" in prompt
    assert "```python\n" + BUGGY.rstrip("\n") + "\n```" in prompt
    assert prompt.endswith("```python\n")
    assert prompt == build_prompt("gcd", "\n" + BUGGY + "\n\n", style)


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
        build_target(FIXED + "s = '```'\n")


def test_target_is_the_fix_without_description_then_the_closing_fence() -> None:
    target = build_target(FIXED)
    assert target.endswith("\n" + END_OF_ANSWER + "\n")
    assert "Euclid" not in target
    assert "gcd(b, a % b)" in target
    body = target.removesuffix(END_OF_ANSWER + "\n")
    assert ast.dump(ast.parse(body)) == ast.dump(ast.parse(strip_module_strings(FIXED)))


def test_strip_module_strings_keeps_code_and_function_docstrings() -> None:
    source = 'import os\n"""module"""\ndef f():\n    """doc"""\n    return 1\n"s"; x = 2\n'
    stripped = strip_module_strings(source)
    assert '"""module"""' not in stripped
    assert '"""doc"""' in stripped and '"s"; x = 2' in stripped
    assert strip_module_strings("def broken(:\n") == "def broken(:\n"


@pytest.mark.parametrize("root", BENCHES, ids=lambda p: p.name)
def test_training_pair_round_trips_through_extraction(root) -> None:
    """What the model learns to write after the prompt extracts back to the reference fix."""
    for problem in load_benchmark(root):
        prompt = build_prompt(problem.name, problem.buggy_source)
        answer = build_target(problem.correct_source) + "### Buggy\nmore text the model rambles"
        candidate = extract_candidate(answer, problem.name, problem.buggy_source)
        expected = strip_module_strings(problem.correct_source)
        assert ast.dump(ast.parse(candidate)) == ast.dump(ast.parse(expected)), problem.name
        assert prompt.count("```") == 3  # opens, closes the buggy block, opens the answer
