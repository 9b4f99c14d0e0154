"""Throughput of CORAL's generation design against its predecessor's, on a CodeLlama-7B shape.

    python bench/gpu_generate.py            # CUDA: CodeLlama-7B architecture, random bf16 weights
    python bench/gpu_generate.py --tiny     # any CPU: a 2-layer model, a few tokens (smoke test)

Nothing is downloaded: the model is built from its LlamaConfig with seeded random weights and a
word-level tokenizer over the same 32,016 ids. Measured in one process, after a warm-up:
  * training tokens/s of one adapter (r=8 on q_proj, v_proj) through coral.model.train;
  * design: the adapter merged, one batch of problems x samples (32 x 5 = 160 rows);
  * predecessor: one adapter loaded per job (unmerged), a batch of `samples` rows per job;
both with 256-token prompts and 256 new tokens, EOS ignored. Prints a table, the ratio
(goal >= 15x) and one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from peft import PeftModel
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GenerationConfig as HFGenerationConfig
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from coral.config import GenerationConfig, TrainingConfig
from coral.evolution.genome import HeavyGenes, Knobs
from coral.hashing import content_hash
from coral.home import Home
from coral.model.adapters import adapter_cache_key, data_fingerprint
from coral.model.generate import generate_for_genome
from coral.model.loading import LoadedModel, quiet_peft_wrap, resolve_device
from coral.model.train import train_adapter
from coral.rng import stream

CODELLAMA_7B = dict(
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    vocab_size=32016,
    max_position_embeddings=16384,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-5,
)
TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    vocab_size=1000,
    max_position_embeddings=1024,
)
GOAL = 15.0


def word_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """One word per id ('w17'), Llama's special ids (unk 0, bos 1, eos 2): prompts tokenise exactly."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"w{i}": i for i in range(3, vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    return fast  # no post-processor: a prompt of n words is exactly n tokens


def build_base(tiny: bool, device: torch.device, seed: int) -> LoadedModel:
    shape = TINY if tiny else CODELLAMA_7B
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    config = LlamaConfig(**shape, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = LlamaForCausalLM._from_config(config, dtype=dtype)  # initialised on the device
    model.eval().requires_grad_(False)
    # Random weights are named by how they were made, instead of hashing 13 GB.
    fingerprint = content_hash({"random_init": shape, "dtype": str(dtype), "seed": seed}, 32)
    return LoadedModel(model, word_tokenizer(int(shape["vocab_size"])), device, "random", fingerprint)


def random_texts(count: int, words: int, vocab_size: int, seed: int, purpose: str) -> list[str]:
    rng = stream(seed, purpose)
    return [" ".join(f"w{i}" for i in rng.integers(3, vocab_size, size=words)) for _ in range(count)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def predecessor(
    base: LoadedModel, adapter: Path, prompts: list[str], samples: int, jobs: int, knobs: Knobs
) -> tuple[int, float]:
    """One job per problem: load the adapter, sample `samples` rows unmerged, unload."""
    tokens, started = 0, time.perf_counter()
    settings = HFGenerationConfig(
        do_sample=True,
        temperature=knobs.temperature,
        top_p=knobs.top_p,
        top_k=knobs.top_k,
        max_new_tokens=knobs.max_new_tokens,
        min_new_tokens=knobs.max_new_tokens,
        pad_token_id=base.tokenizer.pad_token_id,
    )
    for job in range(jobs):
        with quiet_peft_wrap():
            wrapped = PeftModel.from_pretrained(base.model, str(adapter))
        batch = base.tokenizer([prompts[job]] * samples, return_tensors="pt").to(base.device)
        with torch.inference_mode():
            out = wrapped.generate(**batch, generation_config=settings)
        tokens += (out.shape[1] - batch["input_ids"].shape[1]) * samples
        wrapped.unload()
    sync(base.device)
    return tokens, time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="small model, few tokens (CPU smoke)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--problems", type=int)
    parser.add_argument("--samples", type=int)
    parser.add_argument("--prompt-tokens", type=int)
    parser.add_argument("--new-tokens", type=int)
    parser.add_argument("--baseline-jobs", type=int, help="predecessor jobs timed (each = 1 problem)")
    parser.add_argument("--train-steps", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--home", type=Path, help="where the adapters go (default: a temp folder)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: 1 with --tiny)")
    args = parser.parse_args(argv)
    defaults = (4, 2, 16, 8, 2, 3) if args.tiny else (32, 5, 256, 256, 3, 5)
    names = ("problems", "samples", "prompt_tokens", "new_tokens", "baseline_jobs", "train_steps")
    for name, value in zip(names, defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)

    if args.threads or args.tiny:
        # Tiny matrices gain nothing from threads, and spinning ones stall on a shared CPU.
        torch.set_num_threads(args.threads or 1)
    device = resolve_device(args.device)
    base = build_base(args.tiny, device, args.seed)
    vocab = base.model.config.vocab_size
    prompts = random_texts(args.problems, args.prompt_tokens, vocab, args.seed, "bench-prompts")
    rows = [p for p in prompts for _ in range(args.samples)]
    knobs = Knobs(temperature=0.8, top_p=0.95, top_k=50, repetition_penalty=1.0, max_new_tokens=args.new_tokens)
    generation = GenerationConfig(batch_size=len(rows), max_prompt_length=args.prompt_tokens + 8)

    # Warm-up: kernels, allocator, and one training step, outside every timing.
    generate_for_genome(
        base, None, rows[:2], knobs.model_copy(update={"max_new_tokens": 4}), args.seed, generation, ignore_eos=True
    )
    home = Home(args.home or tempfile.mkdtemp(prefix="coral-bench-"))
    genes = HeavyGenes(rank=8, alpha=16, dropout=0.05, target_modules=("q_proj", "v_proj"), adapter_type="lora")
    pairs = list(
        zip(prompts, random_texts(args.problems, args.prompt_tokens, vocab, args.seed, "bench-targets"), strict=True)
    )
    length = 2 * args.prompt_tokens + 1
    for steps in (1, args.train_steps):  # the first run is the warm-up
        training = TrainingConfig(steps=steps, learning_rate=1e-4, batch_size=4, max_length=length)
        key = adapter_cache_key(genes, base.fingerprint, data_fingerprint(pairs), training)
        info = train_adapter(base, genes, pairs, training, home, key)
    assert info.path is not None

    sync(device)
    started = time.perf_counter()
    texts = generate_for_genome(base, info.path, rows, knobs, args.seed, generation, ignore_eos=True)
    sync(device)
    design_s = time.perf_counter() - started
    design_tokens = len(rows) * args.new_tokens  # ignore_eos: every row runs to max_new_tokens
    assert len(texts) == len(rows)
    jobs = min(args.baseline_jobs, args.problems)
    old_tokens, old_s = predecessor(base, info.path, prompts, args.samples, jobs, knobs)

    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "model": "tiny" if args.tiny else "codellama-7b-shape",
        "train_tokens_per_s": info.tokens_per_second,
        "design_rows": len(rows),
        "design_tokens": design_tokens,
        "design_tokens_per_s": design_tokens / design_s,
        "predecessor_batch": args.samples,
        "predecessor_tokens": old_tokens,
        "predecessor_tokens_per_s": old_tokens / old_s,
    }
    result["ratio"] = result["design_tokens_per_s"] / result["predecessor_tokens_per_s"]
    print(f"device {result['device']}, model {result['model']}")
    print(f"training (r=8 q,v, {args.train_steps} steps x 4 rows): {result['train_tokens_per_s']:,.0f} tokens/s")
    print(f"design, merged adapter, one batch of {len(rows)}: {result['design_tokens_per_s']:,.0f} tokens/s")
    print(f"predecessor, adapter per job, batch {args.samples}: {result['predecessor_tokens_per_s']:,.0f} tokens/s")
    verdict = "met" if result["ratio"] >= GOAL else "not met"
    print(f"ratio {result['ratio']:.1f}x (goal >= {GOAL:.0f}x: {verdict})")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
