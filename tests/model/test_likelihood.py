"""fix_chance's computation (coral.model.likelihood) against what sampling actually writes.

The committed tiny model and a real instance of data/mutants: the computed chance that one answer
is the reference fix must match how often the sampler writes it, at several knobs.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from coral.benchmark.loader import load_benchmark
from coral.benchmark.prompts import build_prompt, build_target
from coral.config import GenerationConfig, ModelConfig
from coral.evolution.genome import Knobs
from coral.model.generate import generate_for_genome
from coral.model.likelihood import chance_within, reference_logprobs
from coral.model.loading import LoadedModel, load_base_model

REPO = Path(__file__).resolve().parents[2]
INSTANCE = "bitcount_02"  # the base writes its reference fix about half the time at temperature 0.7


@pytest.fixture(scope="module")
def base() -> LoadedModel:
    return load_base_model(ModelConfig(name=str(REPO / "data" / "models" / "tiny-code"), device="cpu"))


@pytest.fixture(scope="module")
def pair() -> tuple[str, str]:
    problem = next(p for p in load_benchmark(REPO / "data" / "mutants") if p.name == INSTANCE)
    return build_prompt(problem.name, problem.buggy_source), build_target(problem.buggy_source, problem.correct_source)


def knobs(**kw: float) -> Knobs:
    return Knobs(**{"temperature": 0.7, "top_p": 1.0, "top_k": 3000, "repetition_penalty": 1.0,
                    "max_new_tokens": 64, **kw})


@pytest.mark.parametrize("setting", [{}, {"temperature": 1.0, "top_p": 0.8, "top_k": 4},
                                     {"temperature": 0.5, "repetition_penalty": 1.1}])
def test_the_computed_chance_is_how_often_sampling_writes_the_fix(
        base: LoadedModel, pair: tuple[str, str], setting: dict) -> None:  # fmt: skip
    k = knobs(**setting)
    (logprob,) = reference_logprobs(base, None, [pair], k, max_length=2048, batch_size=8)
    p = math.exp(logprob)
    n = 400
    texts = generate_for_genome(base, None, [pair[0]] * n, k, 11, GenerationConfig(batch_size=64))
    seen = sum(t == pair[1].rstrip("\n") for t in texts) / n
    # The reference spelled with other tokens also counts as seen, so p is a lower bound; here the
    # two agree within sampling error (binomial SE at n = 400 is at most 0.025).
    assert 0.02 < p < 0.98
    assert abs(seen - p) < 4 * math.sqrt(p * (1 - p) / n) + 0.02, (setting, p, seen)


def test_greedy_and_cut_tokens(base: LoadedModel, pair: tuple[str, str]) -> None:
    greedy_text = generate_for_genome(base, None, [pair[0]], knobs(), 0, GenerationConfig(), greedy=True)[0]
    written = (pair[0], greedy_text + "\n")  # what greedy decoding writes: chance 1 (log 0)
    other = (pair[0], "@@ 1\n    pass\n```\n")
    assert reference_logprobs(base, None, [written, other], knobs(), max_length=2048, batch_size=8,
                              greedy=True) == [0.0, -math.inf]
    # top_k = 1 leaves only the argmax: the greedy answer is certain, any other impossible
    sure, never = reference_logprobs(base, None, [written, other], knobs(top_k=1), max_length=2048, batch_size=8)
    assert sure == pytest.approx(0.0, abs=1e-6) and never == -math.inf
    # an answer longer than max_new_tokens cannot be written
    assert reference_logprobs(base, None, [pair], knobs(max_new_tokens=3), max_length=2048, batch_size=8) == [-math.inf]


def test_batching_does_not_change_a_chance(base: LoadedModel, pair: tuple[str, str]) -> None:
    problems = load_benchmark(REPO / "data" / "mutants")[:9]
    pairs = [pair] + [(build_prompt(p.name, p.buggy_source), build_target(p.buggy_source, p.correct_source))
                      for p in problems]
    together = reference_logprobs(base, None, pairs, knobs(), max_length=2048, batch_size=4)
    alone = [reference_logprobs(base, None, [x], knobs(), max_length=2048, batch_size=1)[0] for x in pairs]
    assert together == pytest.approx(alone, rel=1e-4, abs=1e-5)


def test_chance_within_k_answers() -> None:
    assert chance_within(math.log(0.5), 1) == pytest.approx(0.5)
    assert chance_within(math.log(0.5), 3) == pytest.approx(0.875)
    assert chance_within(-math.inf, 5) == 0.0
    assert chance_within(0.0, 5) == 1.0
