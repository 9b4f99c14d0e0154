"""Extracting the candidate module from raw model output: one test per output shape."""

from __future__ import annotations

import ast
import os

import pytest

from coral.benchmark import extract as extract_module
from coral.benchmark.extract import extract, extract_candidate

# A buggy program with an import, a helper after the function and a QuixBugs-style description.
BUGGY = '''from heapq import heappop, heappush


def shortest(graph, start):
    """Distance to the nearest node."""
    heap = [(0, start)]
    dist, node = heappop(heap)
    return weight(graph, node) + 1


def weight(graph, node):
    return graph[node]


"""
Shortest
import os
"""
'''
FIXED_FN = "def shortest(graph, start):\n    heap = [(0, start)]\n    dist, node = heappop(heap)\n" \
    "    return weight(graph, node)\n"


def functions(source: str) -> dict[str, str]:
    """Top-level functions of a module, as normalised source."""
    tree = ast.parse(source)
    return {n.name: ast.unparse(n) for n in tree.body if isinstance(n, ast.FunctionDef)}


def imports(source: str) -> list[str]:
    tree = ast.parse(source)
    return [ast.unparse(n) for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]


def assert_fixed(source: str) -> None:
    """The module is the fixed function plus the buggy program's import and helper, nothing
    else (no description string, no prose, no test calls)."""
    fns = functions(source)
    assert fns["shortest"] == ast.unparse(ast.parse(FIXED_FN).body[0])
    assert fns["weight"] == "def weight(graph, node):\n    return graph[node]"
    assert imports(source) == ["from heapq import heappop, heappush"]
    assert len(ast.parse(source).body) == 3, source


def test_fenced_python_block_with_prose_around() -> None:
    raw = f"Sure! Here is the fix:\n\n```python\n{FIXED_FN}```\n\nThe bug was the `+ 1`.\n"
    result = extract(raw, "shortest", BUGGY)
    assert result.method == "code"
    assert_fixed(result.source)


def test_plain_fence_without_language() -> None:
    assert_fixed(extract_candidate(f"```\n{FIXED_FN}```", "shortest", BUGGY))


def test_bare_code() -> None:
    assert_fixed(extract_candidate(FIXED_FN, "shortest", BUGGY))


def test_continuation_after_prompt_fence_then_second_fence_and_junk() -> None:
    """The prompt ends with an open fence: the answer is code, a closing fence, then more."""
    raw = FIXED_FN + "```\n### Buggy\n```python\ndef shortest(graph, start):\n    return 0\n```"
    assert_fixed(extract_candidate(raw, "shortest", BUGGY))


def test_junk_after_the_function_without_a_fence() -> None:
    raw = FIXED_FN + "\nprint(shortest({1: 2}, 1))\nassert shortest({}, 0)\nThis fixes it.\n"
    assert_fixed(extract_candidate(raw, "shortest", BUGGY))


def test_body_only_gets_the_buggy_signature_back() -> None:
    body = "".join(FIXED_FN.splitlines(keepends=True)[1:])
    result = extract(body + "```\nExplanation: removed + 1", "shortest", BUGGY)
    assert result.method == "body"
    assert_fixed(result.source)
    # Differently indented bodies are re-indented to the signature's body indentation.
    two_spaces = "".join(line[2:] for line in body.splitlines(keepends=True))
    assert_fixed(extract_candidate(two_spaces, "shortest", BUGGY))


def test_body_only_without_buggy_source_is_returned_raw() -> None:
    body = "    return weight(graph, node)\n"
    result = extract(body, "shortest")
    assert result.method == "raw" and result.source == body


def test_missing_closing_fence_complete_function() -> None:
    raw = "Fixed version:\n```python\n" + FIXED_FN + "\n"
    assert_fixed(extract_candidate(raw, "shortest", BUGGY))


def test_cut_off_mid_function_is_kept_verbatim_for_the_syntax_objective() -> None:
    raw = "```python\ndef shortest(graph, start):\n    heap = [(0, start)]\n    return weight(gra"
    result = extract(raw, "shortest", BUGGY)
    assert result.method == "unparsed"
    assert "    return weight(gra" in result.source
    with pytest.raises(SyntaxError):
        ast.parse(result.source)


def test_cut_off_inside_trailing_description_string() -> None:
    """A complete function, then an unterminated description: nothing inside the string (here
    an `import os` line) becomes code."""
    raw = FIXED_FN + '\n\n"""\nShortest\nimport os\n\nInput:\n'
    assert_fixed(extract_candidate(raw, "shortest", BUGGY))


def test_helpers_redefined_by_the_answer_win_and_new_ones_are_kept() -> None:
    raw = (
        "import math\n\n" + FIXED_FN + "\n\ndef weight(graph, node):\n    return graph.get(node, 0)\n"
        "\n\ndef unused(x):\n    return math.floor(x)\n"
    )
    source = extract_candidate(raw, "shortest", BUGGY)
    fns = functions(source)
    assert fns["weight"].endswith("return graph.get(node, 0)")
    assert "unused" in fns
    assert imports(source) == ["from heapq import heappop, heappush", "import math"]


def test_echoed_buggy_code_then_fix_takes_the_fix() -> None:
    raw = f"The original:\n```python\n{BUGGY}```\nFixed:\n```python\n{FIXED_FN}```\n"
    assert_fixed(extract_candidate(raw, "shortest", BUGGY))


def test_whole_answer_indented() -> None:
    raw = "".join("    " + line for line in FIXED_FN.splitlines(keepends=True))
    assert_fixed(extract_candidate(raw, "shortest", BUGGY))


def test_column_zero_lines_inside_a_docstring_stay_in_the_function() -> None:
    raw = 'def shortest(graph, start):\n    """\nNo indent here\n    """\n    return 0\n'
    fns = functions(extract_candidate(raw, "shortest", BUGGY))
    assert "No indent here" in fns["shortest"] and fns["shortest"].endswith("return 0")


def test_first_definition_wins_and_crlf_is_normalised() -> None:
    raw = (FIXED_FN + "\n\ndef shortest(graph, start):\n    return -1\n").replace("\n", "\r\n")
    assert_fixed(extract_candidate(raw, "shortest", BUGGY))


def test_prose_only_and_empty_output() -> None:
    assert extract("I cannot fix this.", "shortest", BUGGY).method == "raw"
    assert extract_candidate("I cannot fix this.", "shortest", BUGGY) == "I cannot fix this.\n"
    assert extract("", "shortest", BUGGY) == extract_module.Extraction("", "empty")
    assert extract("```python\n```\n", "shortest", BUGGY).method == "empty"


def test_other_function_name_is_not_taken_for_the_target() -> None:
    raw = "```python\ndef shortest_path(graph, start):\n    return 0\n```"
    assert extract(raw, "shortest", BUGGY).method == "raw"


def test_without_buggy_source_only_the_answer_is_kept() -> None:
    source = extract_candidate("Here:\n" + FIXED_FN + "Done.", "shortest")
    assert list(functions(source)) == ["shortest"] and imports(source) == []


def test_bad_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="identifier"):
        extract_candidate("def f(): pass", "not-a-name")


def test_never_executes_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """Extraction only parses: exec/eval/compile-to-code and imports of the output never run."""
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("extraction executed code")

    monkeypatch.setattr("builtins.exec", forbidden)
    monkeypatch.setattr("builtins.eval", forbidden)
    monkeypatch.setattr(os, "system", forbidden)
    raw = "import os\nos.system('touch /tmp/x')\n" + FIXED_FN + "raise SystemExit(3)\n"
    source = extract_candidate(raw, "shortest", BUGGY)
    assert "shortest" in functions(source) and "os.system" not in source


def test_degenerate_output_stays_cheap(monkeypatch: pytest.MonkeyPatch) -> None:
    """A repetition loop of unclosed brackets: the work (lines parsed) stays bounded."""
    parsed_lines = 0
    real_parse = ast.parse

    def counting_parse(source: str, *args: object, **kwargs: object) -> ast.Module:
        nonlocal parsed_lines
        parsed_lines += source.count("\n") + 1
        return real_parse(source, *args, **kwargs)

    monkeypatch.setattr(ast, "parse", counting_parse)
    raw = FIXED_FN + "\n".join(f"x{i} = foo(" for i in range(3000))
    assert "def shortest" in extract_candidate(raw, "shortest", BUGGY)
    # Growing every span to the end would parse about 4.5 million lines.
    assert parsed_lines < 3 * extract_module._PARSE_BUDGET_LINES


@pytest.mark.parametrize("depth", [1_500, 20_000])
@pytest.mark.parametrize("shape", ["fenced", "body_only", "edit", "main_guard", "helper"])
def test_deeply_nested_text_is_extracted_never_raised(shape: str, depth: int) -> None:
    """Past Python's recursive ast helpers (1,500 deep still compiles) or its parser (20,000):
    every route through extraction returns a candidate (the job body test scores them). Where
    the deep code is the answer's function it is kept as written; elsewhere it is junk around
    the fix, which is taken as usual."""
    deep = "a+" * depth + "b"
    raw = {
        "fenced": f"Fixed:\n```python\ndef shortest(graph, start):\n    return {deep}\n```\n",
        "body_only": f"    heap = [(0, start)]\n    return {deep}\n",
        "edit": f"@@ 8\n    return {deep}\n",
        "main_guard": f"{FIXED_FN}\nif __name__ == {deep}:\n    shortest(1, 2)\n",
        "helper": f"{FIXED_FN}\ndef weight(graph, node):\n    return {deep}\n",
    }[shape]
    result = extract(raw, "shortest", BUGGY)
    if shape in ("fenced", "body_only", "edit"):
        assert f"return {deep}" in result.source, (shape, result.method)
    else:
        assert "def shortest" in result.source and "__main__" not in result.source, (shape, result.method)
