"""`coral modal plan CONFIG`: per stage, the estimated GPU memory, time and cost of one
generation, before anything is paid for. Offline: no token, no download.

Every figure is an estimate from the model's shape and the run's sizes (docs/modal.md,
"Planning"), not a measurement; where a GPU was measured (bench/gpu_*.py) the figures there win.
Memory is counted in decimal GB, as GPU makers and Modal quote cards.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coral.config import Config
from coral.errors import ConfigError

GB = 1e9
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
# Card memory (GB) and Modal's list price (USD per second, modal.com/pricing, 2025).
GPUS: dict[str, tuple[float, float]] = {
    "B200": (180, 0.001736), "H200": (141, 0.001261), "H100": (80, 0.001097),
    "A100-80GB": (80, 0.000694), "A100": (40, 0.000583), "A100-40GB": (40, 0.000583),
    "L40S": (48, 0.000542), "A10G": (24, 0.000306), "A10": (24, 0.000306),
    "L4": (24, 0.000222), "T4": (16, 0.000164),
}
CPU_CORE_SECOND = 0.0000131  # USD per physical core second on Modal
# bf16 dense peak FLOP/s and memory bandwidth (bytes/s) per card.
SPEED: dict[str, tuple[float, float]] = {
    "B200": (2250e12, 8.0e12), "H200": (989e12, 4.8e12), "H100": (989e12, 3.35e12),
    "A100-80GB": (312e12, 2.0e12), "A100": (312e12, 1.55e12), "A100-40GB": (312e12, 1.55e12),
    "L40S": (362e12, 0.86e12), "A10G": (125e12, 0.6e12), "A10": (125e12, 0.6e12),
    "L4": (121e12, 0.3e12), "T4": (65e12, 0.32e12),
}
TRAIN_MFU = 0.35  # share of peak FLOP/s a LoRA training step reaches (assumed)
# A decoding step reads the weights and the KV cache once (at this share of the card's
# bandwidth) plus a fixed per-step overhead (kernel launches, sampling in Python): 0.085 s
# reproduces the ~1,700 tokens/s measured on an H200 at batch 160 (docs/model.md).
BANDWIDTH_SHARE = 0.8
STEP_OVERHEAD = 0.085
CHARS_PER_TOKEN = 2.0  # conservative for code (CodeLlama's tokenizer averages ~3)
HEADROOM = 0.92  # of the card usable: CUDA context, allocator fragmentation
TEST_SECONDS = 0.3  # CPU seconds of one test job (docs/modal.md, measured on configs/smoke.yaml)
CHECKPOINT_PARAMS = 1_000_000_000  # as coral/model/train.py: larger models checkpoint activations
LORA_MODULES_IN = {"q_proj": "h", "k_proj": "h", "v_proj": "h", "o_proj": "h",
                   "gate_proj": "h", "up_proj": "h", "down_proj": "i"}
LORA_MODULES_OUT = {"q_proj": "h", "k_proj": "kv", "v_proj": "kv", "o_proj": "h",
                    "gate_proj": "i", "up_proj": "i", "down_proj": "h"}

# Shapes of models CORAL ships configs for, as their config.json says (used when the file is
# not on this machine): CodeLlama-7B-Python.
KNOWN_SHAPES: dict[str, dict[str, int]] = {
    "codellama/CodeLlama-7b-Python-hf": {
        "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000},
}


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int

    @property
    def params(self) -> int:
        h, i, kv = self.hidden, self.intermediate, self.hidden * self.kv_heads // self.heads
        per_layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
        return self.layers * per_layer + 2 * self.vocab * h + h

    def dim(self, name: str) -> int:
        return {"h": self.hidden, "i": self.intermediate,
                "kv": self.hidden * self.kv_heads // self.heads}[name]


def model_shape(name: str) -> Shape:
    """The model's shape from its config.json (a local folder, or the Hugging Face cache), or
    from KNOWN_SHAPES; a model with neither is refused with what to do."""
    data: dict[str, Any] | None = None
    folder = Path(name).expanduser()
    if (folder / "config.json").is_file():
        data = json.loads((folder / "config.json").read_text())
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
        if isinstance(cached, str):
            data = json.loads(Path(cached).read_text())
        elif name in KNOWN_SHAPES:
            data = KNOWN_SHAPES[name]
    if data is None:
        raise ConfigError(f"model.name {name!r}: its shape is unknown offline; fetch its config "
                          f"once (`huggingface-cli download {name} config.json`) and plan again")
    heads = int(data["num_attention_heads"])
    return Shape(int(data["hidden_size"]), int(data["intermediate_size"]),
                 int(data["num_hidden_layers"]), heads,
                 int(data.get("num_key_value_heads") or heads), int(data["vocab_size"]))


def _gpu(name: str, key: str) -> tuple[str, float, float, float, float]:
    card = name.split(":")[0].rstrip("!").upper()
    match = next((g for g in GPUS if g.upper() == card), None)
    if match is None:
        raise ConfigError(f"{key} {name!r}: no memory figure for this GPU here "
                          f"(known: {', '.join(GPUS)})")
    count = int(name.split(":")[1]) if ":" in name else 1
    memory, price = GPUS[match]
    flops, bandwidth = SPEED[match]
    return match, memory * count * GB, price * count, flops * count, bandwidth * count


def _benchmark_tokens(config: Config) -> tuple[int, list[int], list[int]]:
    """(eval rows per genome, prompt token estimates, train pair token estimates)."""
    from coral.benchmark.prompts import build_prompt, build_target
    from coral.run.lifecycle import load_problems

    problems = load_problems(config)
    style = config.benchmark.prompt_style

    def tokens(text: str) -> int:
        return math.ceil(len(text) / CHARS_PER_TOKEN)

    from coral.benchmark.loader import load_benchmark

    bench = {p.name: p for p in load_benchmark(config.benchmark.root)}
    prompts = [min(tokens(text), config.generation.max_prompt_length) for text in problems.prompts]
    pairs = [min(tokens(build_prompt(n, bench[n].buggy_source, style))
                 + tokens(build_target(bench[n].buggy_source, bench[n].correct_source)),
                 config.training.max_length) for n in problems.train]
    return len(problems.eval) * config.benchmark.samples, prompts, pairs


def train_estimate(shape: Shape, weight_bytes: int, batch: int, longest_row: int,
                   average_row: float, modules: Sequence[str], rank: int, steps: int,
                   flops: float) -> tuple[float, float, float]:
    """(peak bytes, activation bytes, seconds) of training one adapter (see the module doc)."""
    weights = shape.params * weight_bytes
    tokens_batch = batch * longest_row
    lora = sum(rank * (shape.dim(LORA_MODULES_IN[m]) + shape.dim(LORA_MODULES_OUT[m]))
               for m in modules) * shape.layers
    checkpointing = shape.params >= CHECKPOINT_PARAMS
    h, i = shape.hidden, shape.intermediate
    # Saved for backward per token per layer (16-bit): norms' inputs and outputs, q/k/v and
    # their rotated copies, attention output, the MLP's gate/up/act/product, LoRA inputs.
    per_layer = (10 * h + 4 * i + len(modules) * (h + rank)) * 2
    if checkpointing:  # layer inputs kept; one layer's activations live during its recompute
        activations = tokens_batch * (shape.layers * h * 2 + per_layer)
    else:
        activations = tokens_batch * shape.layers * per_layer
    logits = tokens_batch * shape.vocab * (2 + 4 + 4)  # bf16 logits, fp32 upcast, its gradient
    optimizer = lora * (4 + 4 + 4 + 4)  # fp32 weights, gradients, Adam's two moments
    per_token = (6 if checkpointing else 4) * shape.params  # frozen weights: no weight grads
    seconds = steps * batch * average_row * per_token / (flops * TRAIN_MFU)
    return weights + activations + logits + optimizer, activations, seconds


def generate_estimate(shape: Shape, weight_bytes: int, batch: int, longest_prompt: int,
                      average_prompt: float, new: int, modules: Sequence[str], flops: float,
                      bandwidth: float) -> tuple[float, float, float, float]:
    """(peak bytes, KV cache bytes, weights + merged copies bytes, seconds) of one batch."""
    weights = shape.params * weight_bytes
    h, i = shape.hidden, shape.intermediate
    kv_token = 2 * shape.layers * shape.dim("kv") * 2
    kv = batch * (longest_prompt + new) * kv_token
    clones = sum(shape.dim(LORA_MODULES_IN[m]) * shape.dim(LORA_MODULES_OUT[m])
                 for m in modules) * shape.layers * weight_bytes  # merged copies of touched layers
    prefill = batch * longest_prompt * (3 * i + 4 * h) * 2  # one layer's working set at prefill
    decode = new * (STEP_OVERHEAD + (weights + batch * (average_prompt + new / 2) * kv_token) / (
        bandwidth * BANDWIDTH_SHARE))
    prefill_seconds = 2 * shape.params * batch * average_prompt / (flops * TRAIN_MFU)
    return weights + clones + kv + prefill, kv, weights + clones, decode + prefill_seconds


def plan(config: Config) -> dict[str, Any]:
    """Per stage (train, generate, test): memory (GB) against the card, seconds and USD of one
    generation, and `fits`; `problems` holds one line per stage that does not fit."""
    shape = model_shape(config.model.name)
    weight_bytes = DTYPE_BYTES[config.model.dtype]
    weights = shape.params * weight_bytes
    rows, prompts, pairs = _benchmark_tokens(config)
    genes = config.genes
    modules = max(genes.target_modules, key=len)
    rank = max(genes.ranks)
    population = config.population
    parallel = config.modal.max_containers

    # -- train: one adapter per distinct heavy genes, at most `population` a generation
    gname, gmem, gprice, gflops, _ = _gpu(config.modal.gpu_train, "modal.gpu_train")
    checkpointing = shape.params >= CHECKPOINT_PARAMS
    avg_row = sum(pairs) / len(pairs)
    train_memory, activations, train_seconds = train_estimate(
        shape, weight_bytes, config.training.batch_size, max(pairs), avg_row, modules, rank,
        config.training.steps, gflops)
    train_jobs = population
    train_wall = math.ceil(train_jobs / parallel) * train_seconds

    # -- generate: one batch of `rows` per genome, plus the baseline
    nname, nmem, nprice, nflops, nbandwidth = _gpu(config.modal.gpu_generate,
                                                   "modal.gpu_generate")
    batch = min(config.generation.batch_size, rows)
    new = max(config.knobs.max_new_tokens)
    avg_prompt = sum(prompts) / len(prompts)
    gen_memory, kv, weights_and_clones, per_batch_seconds = generate_estimate(
        shape, weight_bytes, batch, max(prompts), avg_prompt, new, modules, nflops, nbandwidth)
    batches = math.ceil(rows / batch)
    gen_seconds = batches * per_batch_seconds
    gen_jobs = population + 1  # and the no-adapter baseline
    gen_wall = math.ceil(gen_jobs / parallel) * gen_seconds

    # -- test: CPU containers
    tests = gen_jobs * rows
    test_seconds = tests * TEST_SECONDS
    test_wall = test_seconds / config.modal.max_containers_test

    def fits(memory: float, card: float) -> bool:
        return memory <= card * HEADROOM

    problems = []
    if not fits(train_memory, gmem):
        problems.append(
            f"training on {config.modal.gpu_train} needs ~{train_memory / GB:.0f} GB of "
            f"{gmem / GB:.0f} GB: lower training.batch_size or training.max_length, or set "
            "modal.gpu_train to a larger card (H200)")
    if not fits(gen_memory, nmem):
        room = nmem * HEADROOM - weights_and_clones
        most = max(1, int(batch * room / (gen_memory - weights_and_clones))) if room > 0 else 0
        change = (f"set generation.batch_size: {most}, or" if most else
                  f"the weights and merged layer copies alone need "
                  f"~{weights_and_clones / GB:.0f} GB; set") + " modal.gpu_generate to a larger card"
        problems.append(f"generation on {config.modal.gpu_generate} needs "
                        f"~{gen_memory / GB:.0f} GB of {nmem / GB:.0f} GB: {change}")
    return {
        "model": {"name": config.model.name, "params": shape.params,
                  "weights_gb": weights / GB},
        "per_generation": {"genomes": population, "rows_per_genome": rows},
        "stages": {
            "train": {"gpu": gname, "memory_gb": train_memory / GB, "card_gb": gmem / GB,
                      "fits": fits(train_memory, gmem), "checkpointing": checkpointing,
                      "activations_gb": activations / GB, "jobs": train_jobs,
                      "seconds_per_job": train_seconds, "wall_seconds": train_wall,
                      "usd": train_jobs * train_seconds * gprice},
            "generate": {"gpu": nname, "memory_gb": gen_memory / GB, "card_gb": nmem / GB,
                         "fits": fits(gen_memory, nmem), "batch": batch,
                         "kv_cache_gb": kv / GB, "jobs": gen_jobs,
                         "seconds_per_job": gen_seconds, "wall_seconds": gen_wall,
                         "usd": gen_jobs * gen_seconds * nprice},
            "test": {"cpu_seconds": test_seconds, "jobs": tests, "wall_seconds": test_wall,
                     "usd": test_seconds * 2 * CPU_CORE_SECOND},
        },
        "problems": problems,
    }


def format_plan(report: dict[str, Any]) -> str:
    model, gen, stages = report["model"], report["per_generation"], report["stages"]
    train, generate, test = stages["train"], stages["generate"], stages["test"]
    total = train["usd"] + generate["usd"] + test["usd"]
    lines = [
        f"model {model['name']}: {model['params'] / 1e9:.2f}B parameters, "
        f"{model['weights_gb']:.1f} GB of weights",
        f"one generation: {gen['genomes']} genomes x {gen['rows_per_genome']} rows "
        "(estimates, not measurements)",
        f"  train     {train['gpu']:9} {train['memory_gb']:6.1f} of {train['card_gb']:.0f} GB"
        f"{'' if train['fits'] else ' DOES NOT FIT'}"
        f"  (activations {train['activations_gb']:.1f} GB"
        f"{', checkpointed' if train['checkpointing'] else ''})  "
        f"{train['jobs']} jobs x {train['seconds_per_job']:.0f} s, "
        f"~{train['wall_seconds'] / 60:.1f} min  ${train['usd']:.2f}",
        f"  generate  {generate['gpu']:9} {generate['memory_gb']:6.1f} of "
        f"{generate['card_gb']:.0f} GB{'' if generate['fits'] else ' DOES NOT FIT'}"
        f"  (batch {generate['batch']}, KV cache {generate['kv_cache_gb']:.1f} GB)  "
        f"{generate['jobs']} jobs x {generate['seconds_per_job']:.0f} s, "
        f"~{generate['wall_seconds'] / 60:.1f} min  ${generate['usd']:.2f}",
        f"  test      CPU       {test['jobs']} jobs, {test['cpu_seconds']:.0f} CPU-s, "
        f"~{test['wall_seconds'] / 60:.1f} min  ${test['usd']:.2f}",
        f"  total     ~${total:.2f} a generation, before idle time and cold starts",
    ]
    return "\n".join(lines)
