"""The committed tiny model: loads offline through coral.model.loading, answers in line edits and
fixes held-out bugs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO

from coral.benchmark.bodies import function_hashes
from coral.benchmark.extract import extract, extract_candidate
from coral.benchmark.loader import load_benchmark
from coral.benchmark.prompts import build_prompt
from coral.benchmark.split import load_split
from coral.config import GenerationConfig, ModelConfig
from coral.evolution.genome import Knobs
from coral.model.tiny import MANIFEST_FILE, META_FILE, TinySpec
from coral.sandbox.runner import run_candidate

MODEL = REPO / "data" / "models" / "tiny-code"
PROBLEMS = REPO / "data" / "problems"
INSTANCES = REPO / "data" / "mutants"
# Measured on the committed model (2026-12-06, 8,000 steps, two classes withheld): see the
# constants' tests. The rate over all held-out instances is in bench/RESULTS.md.
EDITS_AT_LEAST = 5
HELD_OUT_COUNT, HELD_OUT_K, HELD_OUT_SEED = 12, 5, 0


def test_committed_model_is_small_and_described() -> None:
    meta = json.loads((MODEL / META_FILE).read_text())
    assert meta["steps"] >= 100 and len(meta["corpus_fingerprint"]) == 64
    split = json.loads((PROBLEMS / "split.json").read_text())
    # Built against the split the benchmark ships: its eval problems were never read.
    assert meta["train_problems"] == sorted(split["train"])
    assert set(split["eval"]) <= set(meta["excluded_names"])
    total = sum(p.stat().st_size for p in MODEL.iterdir())
    assert total < 15 * 2**20
    assert meta["recipe"].startswith("coral.model.tiny v2")
    # The committed base withholds the classes TinySpec names (a skill left to the adapters), so
    # `coral model build-tiny` with its defaults rebuilds this model.
    assert tuple(meta["spec"]["withheld_classes"]) == TinySpec().withheld_classes
    assert set(TinySpec().withheld_classes) == {"negated_condition", "return_value"}


def test_manifest_shows_no_eval_family_was_trained_on() -> None:
    trained = {p["hash"] for p in json.loads((MODEL / MANIFEST_FILE).read_text())["programs"]}
    split = load_split(INSTANCES)
    by_name = {p.name: p for p in load_benchmark(INSTANCES)}
    for side, expected in ((split.eval, False), (split.train, True)):
        for name in side:
            hashes = set(function_hashes(by_name[name].correct_source).values())
            assert bool(hashes & trained) is expected, name


@pytest.mark.slow
def test_greedy_answers_are_line_edits_that_apply() -> None:
    from coral.model.generate import generate_for_genome
    from coral.model.loading import load_base_model

    base = load_base_model(ModelConfig(name=str(MODEL), device="cpu"))
    train = set(load_split(PROBLEMS).train)
    problems = [p for p in load_benchmark(PROBLEMS) if p.name in train][:6]
    knobs = Knobs(temperature=1.0, top_p=1.0, top_k=50, repetition_penalty=1.0, max_new_tokens=96)
    raw = generate_for_genome(base, None, [build_prompt(p.name, p.buggy_source) for p in problems],
                              knobs, seed=0, generation=GenerationConfig(), greedy=True)  # fmt: skip
    methods = [extract(text, p.name, p.buggy_source).method for p, text in zip(problems, raw, strict=True)]
    assert methods.count("edit") >= EDITS_AT_LEAST, raw


@pytest.mark.slow
def test_fixes_held_out_instances() -> None:
    """The first held-out instances by name (families never trained on), k answers each with a
    fixed seed: at least one is fixed (bench/tiny_model.py measures the rate on all of them)."""
    from coral.model.generate import generate_for_genome
    from coral.model.loading import load_base_model

    base = load_base_model(ModelConfig(name=str(MODEL), device="cpu"))
    held_out = set(load_split(INSTANCES).eval)
    instances = sorted((p for p in load_benchmark(INSTANCES) if p.name in held_out), key=lambda p: p.name)
    chosen = instances[:HELD_OUT_COUNT]
    knobs = Knobs(temperature=0.6, top_p=0.9, top_k=55, repetition_penalty=1.0, max_new_tokens=96)
    prompts = [build_prompt(p.name, p.buggy_source) for p in chosen for _ in range(HELD_OUT_K)]
    raw = generate_for_genome(base, None, prompts, knobs, seed=HELD_OUT_SEED, generation=GenerationConfig())
    fixed = set()
    for index, text in enumerate(raw):
        problem = chosen[index // HELD_OUT_K]
        if problem.name not in fixed and run_candidate(problem, extract_candidate(text, problem.name,
                                                                                  problem.buggy_source)).fixed:
            fixed.add(problem.name)
    assert fixed, raw


@pytest.mark.slow
def test_adapters_change_what_the_model_writes(tmp_path: Path) -> None:
    """Two genomes with different heavy genes train different adapters on the committed model,
    and their answers differ: the evolution has something to select on."""
    from coral.config import TrainingConfig
    from coral.evolution.genome import HeavyGenes
    from coral.home import Home
    from coral.model.adapters import adapter_cache_key, data_fingerprint
    from coral.model.generate import generate_for_genome
    from coral.model.loading import load_base_model
    from coral.model.train import train_adapter, training_pairs

    base = load_base_model(ModelConfig(name=str(MODEL), device="cpu"))
    split = load_split(PROBLEMS)
    by_name = {p.name: p for p in load_benchmark(PROBLEMS)}
    pairs = training_pairs([by_name[n] for n in split.train])
    evaluation = [by_name[n] for n in split.eval][:6]
    prompts = [build_prompt(p.name, p.buggy_source) for p in evaluation]
    # A well-trained base resists a few small steps: train hard enough to move greedy answers,
    # not so hard that it blows up (2e-2 did on the 8,000-step model: loss 0.28 -> 0.46).
    training = TrainingConfig(steps=12, learning_rate=5e-3, batch_size=4)
    knobs = Knobs(temperature=0.5, top_p=0.95, top_k=40, repetition_penalty=1.0, max_new_tokens=128)
    genes = [
        HeavyGenes(rank=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj"), adapter_type="lora"),
        HeavyGenes(rank=16, alpha=64, dropout=0.0, target_modules=("gate_proj", "up_proj", "down_proj"),
                   adapter_type="lora"),
    ]
    home = Home(tmp_path / "home")
    answers = []
    for gene in genes:
        key = adapter_cache_key(gene, base.fingerprint, data_fingerprint(pairs), training)
        info = train_adapter(base, gene, pairs, training, home, key)
        assert info.loss_curve[-1] < info.loss_curve[0] * 1.5  # trained, did not blow up
        answers.append(generate_for_genome(base, info.path, prompts, knobs, seed=3,
                                           generation=GenerationConfig(), greedy=True))
    plain = generate_for_genome(base, None, prompts, knobs, seed=3, generation=GenerationConfig(), greedy=True)
    assert answers[0] != answers[1]
    assert plain != answers[1]
