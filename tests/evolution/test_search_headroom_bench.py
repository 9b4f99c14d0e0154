"""bench/search_headroom.py's closed-form knobs against coral.model.likelihood.

The bench computes fix_chance for any knobs from one forward pass, keeping the largest logits
at each answer token and applying temperature, top-k and top-p to them itself; the run computes it with transformers'
own warpers. On real instances of data/mutants and the committed model the two must agree at
every knob setting, including ones where top-k or top-p cut the reference token.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from coral.benchmark.loader import load_benchmark
from coral.benchmark.prompts import build_prompt, build_target
from coral.config import ModelConfig
from coral.evolution.genome import Knobs
from coral.model.likelihood import answer_tokens, reference_logprobs
from coral.model.loading import LoadedModel, load_base_model

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import search_headroom  # noqa: E402

INSTANCES = ("bitcount_02", "gcd_01", "sieve_03", "lis_02")
TEMPS, TOP_KS, TOP_PS = [0.2, 0.7, 1.0], [1, 4, 40], [0.5, 0.9, 1.0]


@pytest.fixture(scope="module")
def base() -> LoadedModel:
    return load_base_model(ModelConfig(name=str(REPO / "data" / "models" / "tiny-code"), device="cpu"))


def test_the_closed_form_grid_matches_the_warpers_generation_uses(base: LoadedModel) -> None:
    by_name = {p.name: p for p in load_benchmark(REPO / "data" / "mutants")}
    problems = [by_name[n] for n in INSTANCES if n in by_name]
    assert len(problems) >= 3
    pairs = [(build_prompt(p.name, p.buggy_source), build_target(p.buggy_source, p.correct_source)) for p in problems]
    encoded = [answer_tokens(base, prompt, answer, 2048) for prompt, answer in pairs]
    rows = search_headroom.top_logits(base.model, encoded, width=40)
    grid = search_headroom.grid_logprobs(rows, TEMPS, TOP_KS, TOP_PS)
    finite = cut = 0
    for a, t in enumerate(TEMPS):
        for b, k in enumerate(TOP_KS):
            for c, p in enumerate(TOP_PS):
                knobs = Knobs(temperature=t, top_k=k, top_p=p, repetition_penalty=1.0, max_new_tokens=192)
                exact = reference_logprobs(base, None, pairs, knobs, max_length=2048, batch_size=8)
                for i, want in enumerate(exact):
                    got = grid[i, a, b, c]
                    if want == -math.inf:
                        assert got == -np.inf, (problems[i].name, t, k, p, got)
                        cut += 1
                    else:
                        assert abs(got - want) < 1e-3, (problems[i].name, t, k, p, got, want)
                        finite += 1
    # both branches were exercised: chances computed, and reference tokens cut by top-k / top-p
    assert finite > 20 and cut > 5, (finite, cut)


def test_chance_is_the_runs_chance_within() -> None:
    from coral.model.likelihood import chance_within

    logprobs = np.array([-np.inf, -30.0, -2.0, -0.1, 0.0])
    assert search_headroom.chance(logprobs, 5).tolist() == pytest.approx([chance_within(x, 5) for x in logprobs])


def test_a_variant_is_set_items_and_bad_text_is_one_line() -> None:
    from coral.config import load_config

    items = search_headroom.variant_overrides("evolution.mutation_rate=0.5, evolution.tournament_size=4")
    assert items == ["evolution.mutation_rate=0.5", "evolution.tournament_size=4"]
    config = load_config(REPO / "configs" / "local.yaml", items)
    assert (config.evolution.mutation_rate, config.evolution.tournament_size) == (0.5, 4)
    for bad in ("", "evolution.mutation_rate", "evolution.mutation_rate=0.5,oops"):
        with pytest.raises(SystemExit, match="expected KEY=VALUE"):
            search_headroom.variant_overrides(bad)


def test_a_variant_of_an_unknown_key_stops_the_bench_with_one_line(tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run([sys.executable, "-P", str(REPO / "bench" / "search_headroom.py"), "--home", str(tmp_path),
                           "--variant", "evolution.mutation_rat=1.0"], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("search_headroom: ") and "mutation_rat" in last, last
