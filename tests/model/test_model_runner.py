"""Training, storing, loading and generating with real adapters on a tiny random Llama (CPU)."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
import torch
from model_fixtures import build_tiny_model, problems

from coral.config import GenerationConfig, ModelConfig, TrainingConfig
from coral.errors import AdapterError, CoralError
from coral.evolution.genome import HeavyGenes, Knobs
from coral.home import Home
from coral.model.adapters import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    AdapterInfo,
    adapter_cache_key,
    data_fingerprint,
)
from coral.model.generate import generate_for_genome
from coral.model.loading import LoadedModel, has_adapters, load_base_model, shared_base_model
from coral.model.train import train_adapter, training_pairs

ALL_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
KNOBS = Knobs(temperature=1.0, top_p=1.0, top_k=400, repetition_penalty=1.0, max_new_tokens=24)
GENERATION = GenerationConfig(batch_size=4, max_prompt_length=256)
PAIRS_A = training_pairs(problems(["add", "mul"]))
PAIRS_B = training_pairs(problems(["neg", "inc"]))
EVAL = [p for p, _ in training_pairs(problems())]


@pytest.fixture(scope="module", autouse=True)
def _quiet_cpu() -> object:
    # Tiny matrices gain nothing from threads; spinning threads stall on a shared CPU.
    saved_threads = torch.get_num_threads()
    saved_env = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("MODAL_")}
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved_threads)
    os.environ.update(saved_env)


@pytest.fixture(scope="module")
def model_config(tmp_path_factory: pytest.TempPathFactory) -> ModelConfig:
    folder = build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-code")
    return ModelConfig(name=str(folder), device="cpu")


@pytest.fixture(scope="module")
def base(model_config: ModelConfig) -> LoadedModel:
    return load_base_model(model_config)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    return Home(tmp_path_factory.mktemp("home")).ensure()


def train(base: LoadedModel, home: Home, genes: HeavyGenes, pairs, training) -> AdapterInfo:
    key = adapter_cache_key(genes, base.fingerprint, data_fingerprint(pairs), training)
    return train_adapter(base, genes, pairs, training, home, key)


@pytest.fixture(scope="module")
def adapter_a(base: LoadedModel, home: Home) -> AdapterInfo:
    genes = HeavyGenes(rank=8, alpha=16, dropout=0.0, target_modules=ALL_MODULES, adapter_type="lora")
    training = TrainingConfig(steps=60, learning_rate=1e-2, batch_size=2, max_length=256)
    return train(base, home, genes, PAIRS_A, training)


@pytest.fixture(scope="module")
def adapter_b(base: LoadedModel, home: Home) -> AdapterInfo:
    genes = HeavyGenes(rank=4, alpha=8, dropout=0.1, target_modules=ALL_MODULES, adapter_type="lora")
    training = TrainingConfig(steps=30, learning_rate=1e-2, batch_size=2, max_length=256)
    return train(base, home, genes, PAIRS_B, training)


def greedy(base: LoadedModel, adapter: Path | None, prompts=EVAL, knobs=KNOBS) -> list[str]:
    return generate_for_genome(base, adapter, prompts, knobs, 0, GENERATION, greedy=True)


def snapshot(base: LoadedModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in base.model.state_dict().items()}


def test_train_save_load_generate_round_trip(base: LoadedModel, adapter_a: AdapterInfo) -> None:
    assert adapter_a.path is not None and not adapter_a.cache_hit
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, "coral_adapter.json"):
        assert (adapter_a.path / name).is_file()
    assert adapter_a.loss_curve[-1] < adapter_a.loss_curve[0]
    assert adapter_a.pairs_used == 2 and adapter_a.base_fingerprint == base.fingerprint
    # The adapter learnt its two answers: greedy decoding from the saved files reproduces
    # them and stops at the closing fence, returning only the new text.
    prompts = [p for p, _ in PAIRS_A]
    assert greedy(base, adapter_a.path, prompts) == [t.rstrip("\n") for _, t in PAIRS_A]
    assert greedy(base, None, prompts) != greedy(base, adapter_a.path, prompts)
    # Asking again for the same key is a cache hit, not a second training.
    again = train(base, Home(adapter_a.path.parent.parent), adapter_a.genes, PAIRS_A, adapter_a.training)
    assert again.cache_hit and again.weights_sha256 == adapter_a.weights_sha256


def test_adapters_never_stack_on_the_shared_base(
    base: LoadedModel, model_config: ModelConfig, adapter_a: AdapterInfo, adapter_b: AdapterInfo
) -> None:
    before = snapshot(base)
    plain = greedy(base, None)
    greedy(base, adapter_a.path)
    b_after_a = greedy(base, adapter_b.path)
    fresh = load_base_model(model_config)
    assert b_after_a == greedy(fresh, adapter_b.path)
    assert greedy(base, None) == plain
    assert not has_adapters(base.model)
    after = base.model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_different_adapters_give_different_greedy_output(
    base: LoadedModel, adapter_a: AdapterInfo, adapter_b: AdapterInfo
) -> None:
    assert adapter_a.cache_key != adapter_b.cache_key
    assert greedy(base, adapter_a.path) != greedy(base, adapter_b.path)


def test_dora_trains_and_generates(base: LoadedModel, home: Home) -> None:
    genes = HeavyGenes(rank=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj", "o_proj"), adapter_type="dora")
    training = TrainingConfig(steps=15, learning_rate=1e-2, batch_size=2, max_length=256)
    info = train(base, home, genes, PAIRS_B, training)
    config = (info.path / ADAPTER_CONFIG).read_text()
    assert '"use_dora": true' in config
    assert info.loss_curve[-1] < info.loss_curve[0]
    out = greedy(base, info.path)
    assert len(out) == len(EVAL) and out != greedy(base, None)
    assert not has_adapters(base.model)


def test_seeded_sampling_is_deterministic(base: LoadedModel, adapter_a: AdapterInfo) -> None:
    prompts = EVAL[:2] * 2  # the caller repeats prompts for samples
    knobs = KNOBS.model_copy(update={"temperature": 1.5, "max_new_tokens": 10})
    first = generate_for_genome(base, adapter_a.path, prompts, knobs, 7, GENERATION)
    assert generate_for_genome(base, adapter_a.path, prompts, knobs, 7, GENERATION) == first
    assert generate_for_genome(base, adapter_a.path, prompts, knobs, 8, GENERATION) != first
    assert first[0] != first[2]  # two samples of one prompt differ
    # Chunking follows GenerationConfig.batch_size and keeps every row.
    small = GenerationConfig(batch_size=1, max_prompt_length=256)
    assert len(generate_for_genome(base, adapter_a.path, prompts, knobs, 7, small)) == len(prompts)


def test_knobs_steer_generation(base: LoadedModel) -> None:
    # top_k=1 sampling is argmax whatever the temperature: top_k reaches the sampler.
    top1 = KNOBS.model_copy(update={"top_k": 1, "temperature": 2.0, "max_new_tokens": 8})
    assert generate_for_genome(base, None, EVAL, top1, 3, GENERATION) == greedy(base, None, knobs=top1)
    # So does a near-zero top_p (the one most likely token is always kept).
    narrow = KNOBS.model_copy(update={"top_p": 1e-6, "temperature": 2.0, "max_new_tokens": 8})
    assert generate_for_genome(base, None, EVAL, narrow, 3, GENERATION) == greedy(base, None, knobs=narrow)
    # Same seed, other temperature: other text (the temperature reaches the sampler).
    warm, hot = (KNOBS.model_copy(update={"temperature": t, "max_new_tokens": 8}) for t in (0.7, 3.0))
    assert generate_for_genome(base, None, EVAL, warm, 3, GENERATION) != generate_for_genome(
        base, None, EVAL, hot, 3, GENERATION
    )
    # repetition_penalty changes what greedy decoding picks.
    penalised = KNOBS.model_copy(update={"repetition_penalty": 2.5})
    assert greedy(base, None, knobs=penalised) != greedy(base, None)


def test_decoding_is_transformers_greedy_decoding(base: LoadedModel) -> None:
    """The decoding loop (a prompt read once for all its rows, rows leaving the batch as they
    end, prompts of different lengths left-padded together) gives what transformers' own
    `generate` gives for each prompt alone, repetition penalty included."""
    from transformers import GenerationConfig as HFGenerationConfig

    from coral.model.generate import cut_at_end

    prompts = EVAL + EVAL[:3]  # repeated prompts share one prompt cache
    for penalty in (1.0, 1.3):
        knobs = KNOBS.model_copy(update={"repetition_penalty": penalty, "max_new_tokens": 12})
        ours = generate_for_genome(base, None, prompts, knobs, 0, GENERATION, greedy=True, ignore_eos=True)
        theirs = []
        for prompt in prompts:
            ids = torch.tensor([base.tokenizer(prompt)["input_ids"]])
            settings = HFGenerationConfig(max_new_tokens=12, min_new_tokens=12, do_sample=False,
                                          repetition_penalty=penalty, pad_token_id=0, eos_token_id=2)  # fmt: skip
            out = base.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=settings)
            text = base.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True,
                                         clean_up_tokenization_spaces=False)  # fmt: skip
            theirs.append(cut_at_end(text))
        assert ours == theirs
    assert len(set(ours)) > 1  # not a degenerate comparison of empty answers


def test_damaged_or_missing_adapter_is_an_error(base: LoadedModel, adapter_a: AdapterInfo, tmp_path: Path) -> None:
    cases = {}
    cut = tmp_path / "cut"
    shutil.copytree(adapter_a.path, cut)
    weights = (cut / ADAPTER_WEIGHTS).read_bytes()
    (cut / ADAPTER_WEIGHTS).write_bytes(weights[: len(weights) // 2])
    cases[cut] = f"{ADAPTER_WEIGHTS}: truncated"
    no_config = tmp_path / "no-config"
    shutil.copytree(adapter_a.path, no_config)
    (no_config / ADAPTER_CONFIG).unlink()
    cases[no_config] = f"missing {ADAPTER_CONFIG}"
    cases[tmp_path / "absent"] = "adapter folder not found"
    plain = greedy(base, None, EVAL[:1])
    for folder, message in cases.items():
        with pytest.raises(AdapterError, match=message) as caught:
            greedy(base, folder, EVAL[:1])
        assert "\n" not in str(caught.value)
    assert greedy(base, None, EVAL[:1]) == plain and not has_adapters(base.model)


def test_adapter_from_other_base_weights_is_refused(adapter_a: AdapterInfo, tmp_path: Path) -> None:
    other = load_base_model(ModelConfig(name=str(build_tiny_model(tmp_path / "m", seed=5)), device="cpu"))
    with pytest.raises(AdapterError, match="trained on base weights"):
        greedy(other, adapter_a.path, EVAL[:1])


def test_training_that_diverges_fails_saying_so(tmp_path: Path) -> None:
    """A NaN loss (here one NaN weight in the base: a damaged checkpoint; on a GPU, a run of
    half-precision overflow) made NaN adapter weights (every generation from them fails) and a loss
    curve JSON cannot hold, so the adapter was published and then unreadable. Training stops at
    the first such step, naming it."""
    folder = build_tiny_model(tmp_path / "damaged")
    model = load_base_model(ModelConfig(name=str(folder), device="cpu")).model
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[0, 0] = float("nan")
    model.save_pretrained(folder)
    hot = load_base_model(ModelConfig(name=str(folder), device="cpu"))
    home = Home(tmp_path / "home").ensure()
    genes = HeavyGenes(rank=2, alpha=4, dropout=0.0, target_modules=("q_proj", "v_proj"), adapter_type="lora")
    with pytest.raises(AdapterError, match=r"^adapter training diverged at step 1 of 3 \(loss nan\) with lora rank 2"):
        train(hot, home, genes, PAIRS_A, TrainingConfig(steps=3, batch_size=2, max_length=256))
    assert list(home.adapters.iterdir()) == []  # nothing published, no temp folder left


def test_same_key_trains_the_same_adapter_even_when_raced(
    base: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import coral.model.train as train_module

    genes = HeavyGenes(rank=2, alpha=4, dropout=0.1, target_modules=("q_proj", "v_proj"), adapter_type="lora")
    training = TrainingConfig(steps=4, learning_rate=1e-2, batch_size=3, max_length=256)
    raced = Home(tmp_path / "raced")
    # Both writers find no adapter before either has trained: both train, both publish.
    both_looked = threading.Barrier(2)
    real_find = train_module.find_adapter

    def find_then_wait(folder: Path) -> AdapterInfo | None:
        found = real_find(folder)
        both_looked.wait(timeout=60)
        return found

    monkeypatch.setattr(train_module, "find_adapter", find_then_wait)
    results: list[AdapterInfo] = []

    def writer() -> None:
        results.append(train(base, raced, genes, PAIRS_A, training))

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.undo()
    assert sorted(r.cache_hit for r in results) == [False, True]  # one published, one adopted it
    assert results[0].weights_sha256 == results[1].weights_sha256
    assert [p.name for p in raced.adapters.iterdir()] == [results[0].cache_key]  # no temp left
    torch.rand(5)  # other work in the process moves the global RNG: the key alone must decide
    alone = train(base, Home(tmp_path / "alone"), genes, PAIRS_A, training)
    assert alone.weights_sha256 == results[0].weights_sha256
    assert alone.loss_curve == next(r for r in results if not r.cache_hit).loss_curve


def test_bad_inputs_fail_with_one_line(base: LoadedModel, home: Home) -> None:
    genes = HeavyGenes(rank=2, alpha=4, dropout=0.0, target_modules=("no_such_proj",), adapter_type="lora")
    training = TrainingConfig(steps=1, learning_rate=1e-3, batch_size=1, max_length=256)
    with pytest.raises(AdapterError, match="no_such_proj"):
        train(base, home, genes, PAIRS_A, training)
    assert not has_adapters(base.model)
    tight = training.model_copy(update={"max_length": 16})
    ok_genes = genes.model_copy(update={"target_modules": ("q_proj",)})
    with pytest.raises(AdapterError, match="no training pair has an answer token"):
        train(base, home, ok_genes, PAIRS_A, tight)
    with pytest.raises(CoralError, match="max_prompt_length"):
        generate_for_genome(
            base, None, EVAL[:1], KNOBS, 0, GenerationConfig(batch_size=2, max_prompt_length=16), greedy=True
        )
    assert not [p for p in home.adapters.iterdir() if p.name.startswith(".tmp-")]


def test_shared_base_model_loads_once(model_config: ModelConfig) -> None:
    assert shared_base_model(model_config) is shared_base_model(model_config)


def test_an_answer_stuck_in_a_loop_ends() -> None:
    from coral.model.generate import LOOP_NGRAM, _looping

    phrase = list(range(10, 10 + LOOP_NGRAM))  # e.g. ' in the sorted list arr[i] == x'
    assert not _looping([5, 6] + phrase + phrase)  # said twice: could be code
    assert _looping([5, 6] + phrase + [7] + phrase + phrase)  # the third time: stuck
    assert not _looping(list(range(200)))  # long but never repeating
    # A short period repeats many times within the window: `[len(b)][len(b)]...`
    assert _looping([1, 2, 3, 4] * 12)
