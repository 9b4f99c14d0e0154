"""Adapter identity and storage without training: cache keys, fingerprints, labels, publication."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from model_fixtures import build_tiny_model, problems

from coral.config import ModelConfig, TrainingConfig
from coral.errors import AdapterError, ConfigError
from coral.evolution.genome import HeavyGenes
from coral.model.adapters import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    METADATA,
    AdapterInfo,
    adapter_cache_key,
    data_fingerprint,
    publish,
    read_adapter,
    sha256_file,
    write_metadata,
)
from coral.model.loading import base_fingerprint

GENES = HeavyGenes(rank=8, alpha=16, dropout=0.05, target_modules=("q_proj", "v_proj"), adapter_type="lora")
TRAINING = TrainingConfig(steps=10, learning_rate=1e-3, batch_size=2, max_length=128)
PAIRS = [("prompt one", "answer one"), ("prompt two", "answer two")]


@pytest.fixture(autouse=True)
def _no_modal(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in [k for k in os.environ if k.startswith("MODAL_")]:
        monkeypatch.delenv(key)


def key(genes: HeavyGenes = GENES, base: str = "base-a", pairs=PAIRS, training=TRAINING) -> str:
    return adapter_cache_key(genes, base, data_fingerprint(pairs), training)


def test_cache_key_changes_with_each_input_and_nothing_else() -> None:
    reference = key()
    assert key() == reference  # stable
    # Equivalent inputs: module order, a rebuilt config, a copied pair list.
    assert key(genes=GENES.model_copy(update={"target_modules": ("v_proj", "q_proj")})) == reference
    assert key(training=TrainingConfig(**TRAINING.model_dump())) == reference
    assert key(pairs=[tuple(p) for p in PAIRS]) == reference
    # training.data names where the pairs came from; the pairs' fingerprint is what counts, so
    # adapters trained before the key existed keep their keys (pinned: this test's key then).
    assert key(training=TRAINING.model_copy(update={"data": "program-mutants"})) == reference
    assert reference == "382bf97a7e1e3693ce79f0cf"
    changed = [
        key(genes=GENES.model_copy(update={"rank": 4})),
        key(genes=GENES.model_copy(update={"alpha": 32})),
        key(genes=GENES.model_copy(update={"dropout": 0.1})),
        key(genes=GENES.model_copy(update={"target_modules": ("q_proj", "k_proj", "v_proj")})),
        key(genes=GENES.model_copy(update={"adapter_type": "dora"})),
        key(base="base-b"),
        key(pairs=PAIRS[:1]),
        key(pairs=[PAIRS[0], ("prompt two", "answer 2")]),
        key(pairs=list(reversed(PAIRS))),
        key(training=TRAINING.model_copy(update={"steps": 11})),
        key(training=TRAINING.model_copy(update={"learning_rate": 2e-3})),
        key(training=TRAINING.model_copy(update={"batch_size": 4})),
        key(training=TRAINING.model_copy(update={"max_length": 256})),
    ]
    assert len({reference, *changed}) == len(changed) + 1


def test_base_fingerprint_follows_weight_bytes_and_dtype(tmp_path: Path) -> None:
    first = build_tiny_model(tmp_path / "a", seed=0)
    fp = base_fingerprint(ModelConfig(name=str(first)))
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    assert base_fingerprint(ModelConfig(name=str(copy))) == fp  # content, not path
    other = build_tiny_model(tmp_path / "b", seed=1)  # same shapes, other weights
    assert base_fingerprint(ModelConfig(name=str(other))) != fp
    assert base_fingerprint(ModelConfig(name=str(first), dtype="bfloat16")) != fp
    # Changing one byte of the weights changes it.
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    assert base_fingerprint(ModelConfig(name=str(copy))) != fp


def test_base_fingerprint_needs_weights(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="folder not found"):
        base_fingerprint(ModelConfig(name=str(tmp_path / "absent")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no weights in the folder \(model.safetensors"):
        base_fingerprint(ModelConfig(name=str(tmp_path / "empty")))


def test_labels_cover_answer_tokens_only(tmp_path: Path) -> None:
    from model_fixtures import build_tokenizer

    from coral.model.train import IGNORE, collate, encode_pair, training_pairs

    tok = build_tokenizer(tmp_path)
    pairs = training_pairs(problems(["add", "first"]))
    examples = [encode_pair(tok, p, t, max_length=512) for p, t in pairs]
    input_ids, mask, labels = collate(examples, tok.pad_token_id)
    for row, ((prompt, target), (ids, n_prompt)) in enumerate(zip(pairs, examples, strict=True)):
        assert ids[:n_prompt] == tok(prompt)["input_ids"]  # what generation will feed
        assert (labels[row, :n_prompt] == IGNORE).all()
        assert (labels[row, len(ids) :] == IGNORE).all()  # padding
        assert (mask[row, len(ids) :] == 0).all() and (mask[row, : len(ids)] == 1).all()
        answer = labels[row, n_prompt : len(ids)].tolist()
        assert answer == ids[n_prompt:] and answer[-1] == tok.eos_token_id
        assert tok.decode(answer, skip_special_tokens=True) == target
    # Cut at max_length: the prompt stays whole, the answer loses its tail.
    ids, n_prompt = encode_pair(tok, *pairs[0], max_length=examples[0][1] + 3)
    assert len(ids) == n_prompt + 3


def _fake_adapter(folder: Path, marker: str) -> None:
    """A structurally whole adapter whose weights file carries `marker` (for storage tests)."""
    folder.mkdir(parents=True)
    header = b'{"w":{"dtype":"U8","shape":[%d],"data_offsets":[0,%d]}}' % (len(marker), len(marker))
    body = len(header).to_bytes(8, "little") + header + marker.encode()
    (folder / ADAPTER_WEIGHTS).write_bytes(body)
    (folder / ADAPTER_CONFIG).write_text('{"r": 8}')
    info = AdapterInfo(
        cache_key="k",
        genes=GENES,
        base_fingerprint="b",
        data_fingerprint="d",
        training=TRAINING,
        seed=1,
        pairs_used=2,
        pairs_dropped=0,
        train_tokens=10,
        loss_curve=[1.0],
        wall_seconds=0.1,
        weights_sha256=sha256_file(folder / ADAPTER_WEIGHTS),
    )
    write_metadata(folder, info)


def test_concurrent_publication_leaves_one_whole_adapter(tmp_path: Path) -> None:
    target = tmp_path / "adapters" / "KEY"
    target.parent.mkdir()
    writers = 4
    temps = [tmp_path / "adapters" / f".tmp-KEY-{i}" for i in range(writers)]
    for i, temp in enumerate(temps):
        _fake_adapter(temp, marker=f"writer-{i}")
    barrier = threading.Barrier(writers)
    outcome: dict[int, bool] = {}

    def write(i: int) -> None:
        barrier.wait()
        outcome[i] = publish(temps[i], target)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, won in outcome.items() if won]
    assert len(winners) == 1
    info = read_adapter(target)  # whole: its weights match its own metadata
    assert (target / ADAPTER_WEIGHTS).read_bytes().endswith(f"writer-{winners[0]}".encode())
    assert info.path == target
    assert sorted(p.name for p in target.parent.iterdir()) == ["KEY"]  # losers cleaned up


def test_damaged_adapters_are_named(tmp_path: Path) -> None:
    good = tmp_path / "good"
    _fake_adapter(good, "payload-bytes")
    assert read_adapter(good).cache_key == "k"
    with pytest.raises(AdapterError, match="adapter folder not found"):
        read_adapter(tmp_path / "absent")
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, METADATA):
        broken = tmp_path / f"no-{name}"
        shutil.copytree(good, broken)
        (broken / name).unlink()
        with pytest.raises(AdapterError, match=f"missing {name}"):
            read_adapter(broken)
    cut = tmp_path / "cut"
    shutil.copytree(good, cut)
    data = (cut / ADAPTER_WEIGHTS).read_bytes()
    (cut / ADAPTER_WEIGHTS).write_bytes(data[: len(data) - 4])
    with pytest.raises(AdapterError, match=f"{ADAPTER_WEIGHTS}: truncated"):
        read_adapter(cut)
    flipped = tmp_path / "flipped"
    shutil.copytree(good, flipped)
    (flipped / ADAPTER_WEIGHTS).write_bytes(data[:-1] + b"X")
    with pytest.raises(AdapterError, match=f"{ADAPTER_WEIGHTS}: corrupt"):
        read_adapter(flipped)
    # JSON that is not a safetensors header: AttributeError, KeyError, IndexError, ValueError before
    for n, header in enumerate([b"[1, 2]", b'{"w": {"dtype": "U8"}}', b'{"w": {"data_offsets": "x"}}',
                                b'{"w": {"data_offsets": [0, 1' + b"0" * 5000 + b"]}}"]):
        odd = tmp_path / f"odd-header-{n}"
        shutil.copytree(good, odd)
        (odd / ADAPTER_WEIGHTS).write_bytes(len(header).to_bytes(8, "little") + header + b"payload")
        with pytest.raises(AdapterError, match=f"{ADAPTER_WEIGHTS}: corrupt safetensors header"):
            read_adapter(odd)
    bad_json = tmp_path / "bad-json"
    shutil.copytree(good, bad_json)
    (bad_json / ADAPTER_CONFIG).write_text("{not json")
    with pytest.raises(AdapterError, match=f"{ADAPTER_CONFIG}: not valid JSON"):
        read_adapter(bad_json)


def test_a_cache_entry_filed_under_another_key_is_named(tmp_path: Path) -> None:
    """A cache folder is named by its adapter's key; one copied or renamed under another key
    (trained on other genes or data) was used as that key's adapter."""
    from coral.model.adapters import cached_key, check_cache_key, find_adapter

    right = tmp_path / "adapters" / "k"
    _fake_adapter(right, "payload-bytes")
    assert find_adapter(right) is not None and cached_key(right) == "k"
    wrong = tmp_path / "adapters" / "other-key"
    shutil.copytree(right, wrong)
    read_adapter(wrong)  # whole and intact: only its name is wrong
    with pytest.raises(AdapterError, match="holds adapter 'k', not 'other-key'"):
        find_adapter(wrong)
    with pytest.raises(AdapterError, match="holds adapter 'k', not 'other-key'"):
        check_cache_key(wrong, cached_key(wrong))
    with pytest.raises(AdapterError, match="adapter folder not found"):
        cached_key(tmp_path / "adapters" / "absent")


def test_modal_codellama_config_validates() -> None:
    from coral.config import REPO_ROOT, load_config
    from coral.model.loading import is_local

    config = load_config(REPO_ROOT / "configs" / "modal-codellama.yaml")
    assert config.model.name == "codellama/CodeLlama-7b-Python-hf"
    assert not is_local(config.model.name)  # a hub id, loaded the normal HF way
    assert config.model.dtype == "bfloat16" and config.backend.kind == "modal"
