"""A tiny random-weights Llama and a byte-level BPE tokenizer, built on the spot for model tests.

Nothing is downloaded: the tokenizer is trained on a few lines of code and prompt text, the
model is a 2-layer LlamaForCausalLM with seeded random weights, both saved with save_pretrained
so the tests load them through coral.model.loading like any local model.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from coral.benchmark.problem import Problem
from coral.benchmark.prompts import build_prompt, build_target

SOURCES = {
    "add": ("def add(a, b):\n    return a - b\n", "def add(a, b):\n    return a + b\n"),
    "mul": ("def mul(a, b):\n    return a + b\n", "def mul(a, b):\n    return a * b\n"),
    "neg": ("def neg(x):\n    return x\n", "def neg(x):\n    return -x\n"),
    "inc": ("def inc(n):\n    return n - 1\n", "def inc(n):\n    return n + 1\n"),
    "first": ("def first(xs):\n    return xs[1]\n", "def first(xs):\n    return xs[0]\n"),
    "last": ("def last(xs):\n    return xs[0]\n", "def last(xs):\n    return xs[-1]\n"),
}


def problems(names: list[str] | None = None) -> list[Problem]:
    return [
        Problem(name=n, buggy_source=SOURCES[n][0], correct_source=SOURCES[n][1], json_cases=())
        for n in (names or list(SOURCES))
    ]


def _corpus() -> list[str]:
    texts = []
    for name, (buggy, fixed) in SOURCES.items():
        texts.append(build_prompt(name, buggy) + build_target(buggy, fixed))
        texts.append(build_prompt(name, buggy, "instruct") + build_target(buggy, fixed))
    return texts * 4


def build_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    """Byte-level BPE (every string encodes; merges learnt from the corpus), saved to `folder`."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(folder)
    return fast


def build_tiny_model(folder: Path, seed: int = 0, pad_token: bool = True) -> Path:
    """Save a random 2-layer Llama + tokenizer to `folder`; same seed, same bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def clear_modal_env() -> None:
    """Tests never talk to Modal: a stray token would make a call retry for a minute."""
    for key in [k for k in os.environ if k.startswith("MODAL_")]:
        del os.environ[key]


def _byte_bpe(folder: Path, special: list[str], bos: str | None = None) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


def build_arch_model(folder: Path, arch: str, seed: int = 0, positions: int = 1024) -> Path:
    """A tiny random model of another family than Llama, with its family's tokenizer conventions:

    gpt2      Conv1D c_attn/c_proj/c_fc, tied embeddings; <|endoftext|> is BOS, EOS and UNK, no
              pad token, no BOS added (as GPT-2, Pythia, Phi, Falcon ship)
    opt       q_proj/k_proj/v_proj/out_proj + fc1/fc2; </s> is BOS and EOS, added in front of
              every text; <pad> is its own token
    gpt_neox  query_key_value/dense/dense_h_to_4h/dense_4h_to_h; no pad token
    """

    folder.mkdir(parents=True, exist_ok=True)
    small = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64}
    if arch == "opt":
        tok = _byte_bpe(folder, ["<s>", "<pad>", "</s>", "<unk>"], bos="</s>")
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>",
                                       pad_token="<pad>", unk_token="<unk>")
        ids = {"pad_token_id": 1, "bos_token_id": 2, "eos_token_id": 2}
        config = AutoConfig.for_model("opt", vocab_size=len(fast), ffn_dim=128, word_embed_proj_dim=64,
                                      max_position_embeddings=positions, **small, **ids)
    else:
        tok = _byte_bpe(folder, ["<|endoftext|>"])
        end = "<|endoftext|>"
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=end, eos_token=end, unk_token=end)
        ids = {"bos_token_id": 0, "eos_token_id": 0}
        if arch == "gpt2":
            config = AutoConfig.for_model("gpt2", vocab_size=len(fast), n_embd=64, n_layer=2, n_head=4,
                                          n_positions=positions, **ids)
        else:
            config = AutoConfig.for_model(arch, vocab_size=len(fast), intermediate_size=128,
                                          max_position_embeddings=positions, **small, **ids)
    fast.save_pretrained(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder, safe_serialization=True)
    return folder
