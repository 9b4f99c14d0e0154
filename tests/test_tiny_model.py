"""The committed tiny model: loads offline through coral.model.loading and writes Python."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from conftest import REPO

from coral.benchmark.extract import extract_candidate
from coral.benchmark.loader import load_benchmark
from coral.benchmark.prompts import build_prompt
from coral.benchmark.split import load_split
from coral.config import GenerationConfig, ModelConfig
from coral.evolution.genome import Knobs
from coral.model.tiny import META_FILE

MODEL = REPO / "data" / "models" / "tiny-code"
PROBLEMS = REPO / "data" / "problems"


def test_committed_model_is_small_and_described() -> None:
    meta = json.loads((MODEL / META_FILE).read_text())
    assert meta["steps"] >= 100 and len(meta["corpus_fingerprint"]) == 64
    split = json.loads((PROBLEMS / "split.json").read_text())
    # Built against the split the benchmark ships: its eval problems were never read.
    assert meta["train_problems"] == sorted(split["train"])
    assert set(split["eval"]) <= set(meta["excluded_names"])
    total = sum(p.stat().st_size for p in MODEL.iterdir())
    assert total < 15 * 2**20


def test_greedy_answers_parse_at_least_sometimes() -> None:
    from coral.model.generate import generate_for_genome
    from coral.model.loading import load_base_model

    base = load_base_model(ModelConfig(name=str(MODEL), device="cpu"))
    train = set(load_split(PROBLEMS).train)
    problems = [p for p in load_benchmark(PROBLEMS) if p.name in train][:6]
    knobs = Knobs(temperature=1.0, top_p=1.0, top_k=50, repetition_penalty=1.0, max_new_tokens=160)
    raw = generate_for_genome(base, None, [build_prompt(p.name, p.buggy_source) for p in problems],
                              knobs, seed=0, generation=GenerationConfig(), greedy=True)  # fmt: skip
    parsed = 0
    for problem, text in zip(problems, raw, strict=True):
        candidate = extract_candidate(text, problem.name, problem.buggy_source)
        try:
            tree = ast.parse(candidate)
        except SyntaxError:
            continue
        parsed += any(isinstance(n, ast.FunctionDef) and n.name == problem.name for n in tree.body)
    assert parsed >= 2, raw


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
    # A well-trained base resists a few small steps: train hard enough to move greedy answers.
    training = TrainingConfig(steps=12, learning_rate=2e-2, batch_size=4)
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
