"""Peak GPU memory and time of training and generation at CodeLlama-7B shapes, against what
`coral modal plan` estimates for the same sizes (coral/modal/plan.py).

    python bench/gpu_plan.py            # CUDA: CodeLlama-7B architecture, random bf16 weights
    python bench/gpu_plan.py --tiny     # any CPU: the tiny shape (smoke test of the script)

Nothing is downloaded (the model of bench/gpu_generate.py). Measured in one process:
  * training through coral.model.train (checkpointing as it decides) at the shipped config's
    worst case: rank 64 on all seven modules, batch 8 x `--row-tokens` tokens;
  * generation through coral.model.generate: one merged batch of `--rows` rows of
    `--prompt-tokens` prompts and `--new-tokens` new tokens, EOS ignored.
Prints measured / estimated for each, and one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from gpu_generate import build_base, random_texts, sync  # bench/ is the script's folder

from coral.config import GenerationConfig, TrainingConfig
from coral.evolution.genome import HeavyGenes, Knobs
from coral.home import Home
from coral.modal.plan import GB, SPEED, Shape, generate_estimate, train_estimate
from coral.model.adapters import adapter_cache_key, data_fingerprint
from coral.model.generate import generate_for_genome
from coral.model.loading import resolve_device
from coral.model.train import train_adapter

ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def peak(device: torch.device) -> float:
    return float(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else 0.0


def reset(device: torch.device) -> None:
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--gpu", default="H100", help="the card's name in the plan's tables")
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--row-tokens", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=95)
    parser.add_argument("--prompt-tokens", type=int, default=514)
    parser.add_argument("--new-tokens", type=int, default=384)
    args = parser.parse_args(argv)
    if args.tiny:
        torch.set_num_threads(1)
        args.row_tokens, args.rows, args.prompt_tokens, args.new_tokens = 32, 4, 16, 8
    device = resolve_device("auto")
    reset(device)
    base = build_base(args.tiny, device, 0)
    weights = peak(device)
    config = base.model.config
    shape = Shape(config.hidden_size, config.intermediate_size, config.num_hidden_layers,
                  config.num_attention_heads, config.num_key_value_heads, config.vocab_size)
    vocab = config.vocab_size
    home = Home(tempfile.mkdtemp(prefix="coral-bench-plan-"))
    genes = HeavyGenes(rank=args.rank, alpha=2 * args.rank, dropout=0.05, target_modules=ALL,
                       adapter_type="lora")
    half = args.row_tokens // 2
    pairs = list(zip(random_texts(args.batch, half, vocab, 0, "plan-prompts"),
                     random_texts(args.batch, args.row_tokens - half, vocab, 0, "plan-targets"),
                     strict=True))
    results: dict[str, float] = {"weights_gb": weights / GB}
    for steps in (1, args.steps):  # the first is the warm-up
        training = TrainingConfig(steps=steps, learning_rate=1e-4, batch_size=args.batch,
                                  max_length=args.row_tokens + 2)
        key = adapter_cache_key(genes, base.fingerprint, data_fingerprint(pairs), training)
        reset(device)
        info = train_adapter(base, genes, pairs, training, home, key)
    results["train_peak_gb"] = peak(device) / GB
    results["train_seconds_per_step"] = info.wall_seconds / args.steps
    flops, bandwidth = SPEED[args.gpu]
    memory, _, seconds = train_estimate(shape, 2, args.batch, args.row_tokens + 1,
                                        args.row_tokens + 1, ALL, args.rank, 1, flops)
    results["train_estimate_gb"], results["train_estimate_seconds_per_step"] = memory / GB, seconds

    prompts = random_texts(args.rows, args.prompt_tokens, vocab, 0, "plan-eval")
    knobs = Knobs(temperature=0.8, top_p=0.95, top_k=50, repetition_penalty=1.0,
                  max_new_tokens=args.new_tokens)
    generation = GenerationConfig(batch_size=args.rows, max_prompt_length=args.prompt_tokens + 8)
    assert info.path is not None
    reset(device)
    sync(device)
    started = time.perf_counter()
    try:
        texts = generate_for_genome(base, info.path, prompts, knobs, 0, generation,
                                    ignore_eos=True)
        assert len(texts) == args.rows
    except torch.OutOfMemoryError:  # a figure too: the card is too small for this batch
        results["generate_oom"] = 1.0
    sync(device)
    results["generate_seconds"] = time.perf_counter() - started
    results["generate_peak_gb"] = peak(device) / GB
    memory, _, _, seconds = generate_estimate(shape, 2, args.rows, args.prompt_tokens + 1,
                                              args.prompt_tokens + 1, args.new_tokens, ALL,
                                              flops, bandwidth)
    results["generate_estimate_gb"], results["generate_estimate_seconds"] = memory / GB, seconds
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}; shape {'tiny' if args.tiny else 'codellama-7b'}; estimates for {args.gpu}")
    print(f"weights: {results['weights_gb']:.1f} GB")
    print(f"train (r={args.rank}, 7 modules, {args.batch} x {args.row_tokens}): peak "
          f"{results['train_peak_gb']:.1f} GB (estimate {results['train_estimate_gb']:.1f}), "
          f"{results['train_seconds_per_step']:.2f} s/step (estimate "
          f"{results['train_estimate_seconds_per_step']:.2f})")
    print(f"generate ({args.rows} rows, {args.prompt_tokens}+{args.new_tokens}): peak "
          f"{results['generate_peak_gb']:.1f} GB (estimate {results['generate_estimate_gb']:.1f}), "
          f"{results['generate_seconds']:.1f} s (estimate {results['generate_estimate_seconds']:.1f})")
    print(json.dumps({"device": name, **results}))
    return results


if __name__ == "__main__":
    main()
