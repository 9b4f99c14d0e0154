"""Base models of other families than Llama (GPT-2's Conv1D, OPT, GPT-NeoX) and damaged model
folders: what a researcher pointing model.name at their own folder meets, before and during a run.

Each model is a tiny random one built here (nothing downloaded), with its family's module names
and tokenizer conventions (no pad token, BOS == EOS, tied embeddings).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from model_fixtures import build_arch_model, build_tiny_model, problems

from coral.config import Config, GenerationConfig, GeneSpace, ModelConfig, TrainingConfig
from coral.errors import AdapterError, ConfigError
from coral.evolution.genome import HeavyGenes, Knobs
from coral.home import Home
from coral.model.adapters import adapter_cache_key, data_fingerprint
from coral.model.generate import generate_for_genome
from coral.model.loading import base_fingerprint, load_base_model
from coral.model.train import train_adapter, training_pairs
from coral.run.lifecycle import check_model

PAIRS = training_pairs(problems(["add", "mul"]))
PROMPTS = [p for p, _ in training_pairs(problems())][:3]
KNOBS = Knobs(temperature=1.0, top_p=1.0, top_k=50, repetition_penalty=1.0, max_new_tokens=8)
GENERATION = GenerationConfig(batch_size=4, max_prompt_length=256)
TRAINING = TrainingConfig(steps=2, learning_rate=1e-2, batch_size=2, max_length=256)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> object:
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_arch_model(tmp_path_factory.mktemp("gpt2") / "gpt2", "gpt2")


@pytest.fixture(scope="module")
def opt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_arch_model(tmp_path_factory.mktemp("opt") / "opt", "opt")


def run_config(folder: Path, target_modules: list[list[str]]) -> Config:
    return Config(model=ModelConfig(name=str(folder), device="cpu"),
                  genes=GeneSpace(target_modules=target_modules))


def train(base, home: Home, modules: tuple[str, ...], adapter_type: str = "lora"):
    genes = HeavyGenes(rank=2, alpha=4, dropout=0.0, target_modules=modules, adapter_type=adapter_type)
    key = adapter_cache_key(genes, base.fingerprint, data_fingerprint(PAIRS), TRAINING)
    return train_adapter(base, genes, PAIRS, TRAINING, home, key)


def test_gpt2_conv1d_trains_merges_and_restores(gpt2: Path, tmp_path: Path) -> None:
    """Conv1D layers (weights stored transposed), tied embeddings, no pad token, no BOS."""
    base = load_base_model(ModelConfig(name=str(gpt2), device="cpu"))
    assert base.tokenizer.pad_token_id == base.tokenizer.eos_token_id  # padded with EOS
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    plain = generate_for_genome(base, None, PROMPTS, KNOBS, 0, GENERATION, greedy=True)
    home = Home(tmp_path).ensure()
    for adapter_type in ("lora", "dora"):
        info = train(base, home, ("c_attn", "c_proj", "c_fc"), adapter_type)
        assert len(info.loss_curve) == TRAINING.steps
        generate_for_genome(base, info.path, PROMPTS, KNOBS, 0, GENERATION)
    after = base.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and set(before) == set(after)
    assert generate_for_genome(base, None, PROMPTS, KNOBS, 0, GENERATION, greedy=True) == plain


def test_preflight_names_the_modules_the_model_has(gpt2: Path, opt: Path) -> None:
    """The default q_proj/v_proj on GPT-2 is one line before the run, naming what it has."""
    with pytest.raises(ConfigError) as caught:
        check_model(run_config(gpt2, [["q_proj", "v_proj"], ["c_attn"]]))
    message = str(caught.value)
    assert "\n" not in message
    assert "q_proj, v_proj are not modules of" in message and "GPT2LMHeadModel" in message
    assert message.endswith("LoRA can target its c_attn, c_fc, c_proj")
    # One missing module in a set is as wrong as all: peft would train the others, silently.
    with pytest.raises(ConfigError, match=r"gate_proj is not a module of .*fc1, fc2, k_proj, out_proj, q_proj"):
        check_model(run_config(opt, [["q_proj", "v_proj"], ["q_proj", "gate_proj"]]))
    check_model(run_config(gpt2, [["c_attn", "c_proj"], ["attn.c_proj"], ["lm_head"]]))  # tied head
    check_model(run_config(opt, [["q_proj", "v_proj", "out_proj"], ["fc1", "fc2"]]))


def test_training_refuses_a_module_the_model_lacks(opt: Path, tmp_path: Path) -> None:
    """Hub ids and Modal workers skip the folder preflight: the train job says it, not peft's
    silent subset (on the old code an adapter for q_proj alone, filed under the pair's key)."""
    base = load_base_model(ModelConfig(name=str(opt), device="cpu"))
    with pytest.raises(AdapterError, match=r"gate_proj is not a module of .*OPTForCausalLM.*fc1, fc2"):
        train(base, Home(tmp_path).ensure(), ("q_proj", "gate_proj"))
    assert not any((tmp_path / "adapters").iterdir())


def _damaged(tmp_path: Path, source: Path, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(source, folder)
    return folder


def test_damaged_model_folders_are_one_line_naming_the_file(gpt2: Path, tmp_path: Path) -> None:
    config = [["c_attn"]]
    # Weights cut off mid-copy: the run's preflight and the loader (coral bench eval) both say so.
    cut = _damaged(tmp_path, gpt2, "cut")
    weights = cut / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    for check in (lambda: check_model(run_config(cut, config)),
                  lambda: load_base_model(ModelConfig(name=str(cut), device="cpu"))):
        with pytest.raises(ConfigError, match=rf"^{weights}: truncated \(\d+ of \d+ bytes\)$"):
            check()
    # No weights at all.
    bare = _damaged(tmp_path, gpt2, "bare")
    (bare / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match=r"no weights in the folder \(model.safetensors"):
        check_model(run_config(bare, config))
    # A sharded checkpoint missing one of its shards.
    sharded = _damaged(tmp_path, gpt2, "sharded")
    (sharded / "model.safetensors").rename(sharded / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ConfigError, match=r"missing model-00002-of-00002.safetensors \(a shard model.safetensors"):
        check_model(run_config(sharded, config))
    # A model_type this transformers does not know: one line, not its multi-line ValueError.
    unknown = _damaged(tmp_path, gpt2, "unknown")
    settings = json.loads((unknown / "config.json").read_text())
    (unknown / "config.json").write_text(json.dumps({**settings, "model_type": "gpt2x"}))
    with pytest.raises(ConfigError, match=r"could not load \(.*model type `gpt2x`") as caught:
        load_base_model(ModelConfig(name=str(unknown), device="cpu"))
    assert "\n" not in str(caught.value)


def test_an_old_style_checkpoint_is_checked_too(gpt2: Path, tmp_path: Path) -> None:
    """pytorch_model.bin (older GPT-2, OPT, Pythia uploads): modules read by a meta-device load;
    a folder without a tokenizer is one line from the loader too (`coral bench eval --model`)."""
    from safetensors.torch import load_file

    old = _damaged(tmp_path, gpt2, "bin")
    torch.save(load_file(old / "model.safetensors"), old / "pytorch_model.bin")
    (old / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match=r"q_proj is not a module of .*LoRA can target its c_attn, c_fc, c_proj$"):
        check_model(run_config(old, [["q_proj"]]))
    check_model(run_config(old, [["c_attn"]]))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (old / name).unlink()
    with pytest.raises(ConfigError, match=r"^model.name .*/bin: no tokenizer in the folder"):
        load_base_model(ModelConfig(name=str(old), device="cpu"))


def test_fingerprint_hashes_the_weights_transformers_loads(tmp_path: Path) -> None:
    """Mistral's hub folders carry consolidated.safetensors (the original format) beside
    model.safetensors: it is not loaded, so it is neither hashed (14 GB) nor read for modules."""
    folder = build_tiny_model(tmp_path / "m")
    model = ModelConfig(name=str(folder), device="cpu")
    before = base_fingerprint(model)
    (folder / "consolidated.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    assert base_fingerprint(model) == before
    check_model(run_config(folder, [["q_proj", "v_proj"]]))


def test_every_end_token_of_the_generation_config_ends_an_answer(tmp_path: Path) -> None:
    """Llama-3-Instruct and Qwen2-Instruct list more than the tokenizer's EOS in
    generation_config.json (<|eot_id|>, <|im_end|>): an answer ends at any of them, as in
    transformers' `generate` (the old loop ran on past the end of the turn)."""
    folder = build_tiny_model(tmp_path / "m")
    model = ModelConfig(name=str(folder), device="cpu")
    prompt = PROMPTS[:1]
    long = Knobs(temperature=1.0, top_p=1.0, top_k=50, repetition_penalty=1.0, max_new_tokens=12)
    base = load_base_model(model)
    ids = base.tokenizer(prompt[0])["input_ids"]
    free = generate_for_genome(base, None, prompt, long, 0, GENERATION, greedy=True, ignore_eos=True)
    inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    out = base.model.generate(**inputs, max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=0)
    new = out[0, len(ids):].tolist()
    end = new[4]  # the fifth token the model writes becomes a second end-of-turn token
    settings = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**settings, "eos_token_id": [2, end]}))
    base = load_base_model(model)
    theirs = base.model.generate(**inputs, max_new_tokens=12, do_sample=False, pad_token_id=0)
    cut = theirs[0, len(ids):].tolist()
    assert cut[-1] == end and len(cut) == new.index(end) + 1
    ours = generate_for_genome(base, None, prompt, long, 0, GENERATION, greedy=True)
    expected = base.tokenizer.decode(cut[:-1], skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert ours == [expected] and free[0].startswith(expected) and free[0] != expected


def test_a_learned_position_table_bounds_prompt_and_answer_before_the_run(gpt2: Path, tmp_path: Path) -> None:
    """GPT-2 and OPT index a learned table of positions: past it, generation raised IndexError in
    the worker (a device assert on a GPU), minutes into the run. Now one line before it."""
    from coral.model.lengths import check_lengths

    bench = {p.name: p for p in problems()}
    names = sorted(bench)[:2]
    small = build_arch_model(tmp_path / "gpt2-80", "gpt2", positions=80)
    base = load_base_model(ModelConfig(name=str(small), device="cpu"))
    prompt = max(PROMPTS, key=len)
    assert len(base.tokenizer(prompt)["input_ids"]) < 80 < len(base.tokenizer(prompt)["input_ids"]) + 64
    with pytest.raises(IndexError):  # what the worker met
        generate_for_genome(base, None, [prompt], KNOBS.model_copy(update={"max_new_tokens": 64}), 1,
                            GENERATION, greedy=True, ignore_eos=True)
    model = ModelConfig(name=str(small), device="cpu")
    with pytest.raises(ConfigError, match=r"^model .*gpt2-80 has 80 learned positions: problem \w+'s prompt "
                                          r"\(\d+ tokens\) and the largest knobs.max_new_tokens \(64\) need \d+; "
                                          r"lower knobs.max_new_tokens to at most \d+$"):
        check_lengths(Config(model=model, knobs={"max_new_tokens": [8, 64]}, training={"max_length": 80}),
                      bench, [], names)
    with pytest.raises(ConfigError, match=r"max_length=256 keeps them; lower training.max_length to at most 80$"):
        check_lengths(Config(model=model, knobs={"max_new_tokens": [64]}, training={"max_length": 256}),
                      bench, names, [])
    roomy = ModelConfig(name=str(gpt2), device="cpu")  # 1,024 positions
    check_lengths(Config(model=roomy, knobs={"max_new_tokens": [64]}, training={"max_length": 256}),
                  bench, names, names)
