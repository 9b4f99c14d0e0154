"""Prompt and answer lengths are checked before a run starts, in the model's own tokens."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import REPO, run_coral

from coral.benchmark.loader import load_benchmark
from coral.config import Config
from coral.errors import ConfigError
from coral.model.lengths import _token_counter, check_lengths

TINY = REPO / "data" / "models" / "tiny-code"
MINI = REPO / "tests" / "fixtures" / "mini_bench"
pytestmark = pytest.mark.skipif(not (TINY / "config.json").is_file(), reason="tiny model not built")


def config(**sections: dict) -> Config:
    return Config.model_validate({"model": {"name": str(TINY)}, **sections})


@pytest.fixture(scope="module")
def tokens() -> object:
    """The tiny model's tokenizer, loaded once (it is what check_lengths loads by default)."""
    return _token_counter(config())


def long_problem(tmp_path: Path) -> dict:
    """The mini benchmark plus a problem whose prompt is QuixBugs-long (over 512 tokens)."""
    root = tmp_path / "bench"
    shutil.copytree(MINI, root, ignore=shutil.ignore_patterns("__pycache__"))
    body = "".join(f"    step_{i} = xs[{i} % len(xs)] + {i}  # keep going\n" for i in range(18))
    program = f"def long_one(xs):\n{body}    return xs\n"
    (root / "python_programs" / "long_one.py").write_text(program)
    (root / "correct_python_programs" / "long_one.py").write_text(program.replace("return xs", "return xs[:]"))
    (root / "json_testcases" / "long_one.json").write_text("[[[1]], [1]]\n")
    return {p.name: p for p in load_benchmark(root)}


def test_defaults_fit_a_quixbugs_long_prompt(tmp_path: Path) -> None:
    problems = long_problem(tmp_path)
    check_lengths(config(), problems, ["gcd"], ["long_one", "mean"])  # no error (its own tokenizer)


def test_a_prompt_over_the_limit_is_one_error_naming_problem_length_and_key(tmp_path: Path, tokens) -> None:
    problems = long_problem(tmp_path)
    with pytest.raises(ConfigError) as err:
        check_lengths(config(generation={"max_prompt_length": 512}), problems, ["gcd"], ["long_one", "mean"], tokens)
    message = str(err.value)
    assert message.startswith("problem long_one: its prompt is ") and "\n" not in message
    length = int(message.split("its prompt is ")[1].split()[0])
    assert length > 512 and message.endswith(
        f"over generation.max_prompt_length=512; raise generation.max_prompt_length to at least {length}")


def test_answers_and_training_pairs_are_checked(tmp_path: Path, tokens) -> None:
    problems = long_problem(tmp_path)
    with pytest.raises(ConfigError, match=r"^problem long_one: its reference answer is \d+ tokens, over the "
                                          r"largest knobs.max_new_tokens \(4\); raise knobs.max_new_tokens"):
        check_lengths(config(knobs={"max_new_tokens": [2, 4]}), problems, [], ["long_one"], tokens)
    with pytest.raises(ConfigError, match=r"^problem long_one: its training pair is \d+ tokens, over "
                                          r"training.max_length=500; raise training.max_length to at least"):
        check_lengths(config(training={"max_length": 500}), problems, ["long_one"], ["mean"], tokens)


def test_a_run_stops_before_it_starts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = run_coral("run", str(REPO / "configs" / "smoke.yaml"), "--set", "generation.max_prompt_length=64",
                       env={"CORAL_HOME": str(home)}, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "over generation.max_prompt_length=64; raise" in result.stderr
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())  # nothing registered
