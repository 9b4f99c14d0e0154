"""How good and how fast the offline tiny model is, on the evaluation split.

    python bench/tiny_model.py                  # data/models/tiny-code, default config
    python bench/tiny_model.py --model DIR --samples 2 --repeats 3

Rows: (a) echo, the buggy program returned unchanged (it passes every case the bug does not
touch: the bar to beat); (b) the tiny model with no adapter, greedy and sampled; (c) LoRA/DoRA
adapters with a few gene settings, trained on the TRAINING split through coral.model.train.
Columns: mean bugfix (fraction of cases passed, averaged over problems x samples), fixed@k
(problems where one of k samples passes every case), syntax (candidates that parse).
Timings: median wall seconds of one adapter training job and of one genome's generation
(eval problems x samples in one generate_for_genome call). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from coral.benchmark.extract import extract_candidate
from coral.benchmark.loader import load_benchmark
from coral.benchmark.problem import Problem
from coral.benchmark.prompts import build_prompt
from coral.benchmark.split import load_split
from coral.config import Config, ModelConfig
from coral.evolution.genome import HeavyGenes, Knobs
from coral.home import Home
from coral.model.adapters import adapter_cache_key, data_fingerprint
from coral.model.generate import generate_for_genome
from coral.model.loading import LoadedModel, load_base_model
from coral.model.train import train_adapter, training_pairs
from coral.sandbox.runner import run_candidate

ADAPTERS = {
    "lora r4 qv": HeavyGenes(rank=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj"),
                             adapter_type="lora"),
    "lora r8 qkvo": HeavyGenes(rank=8, alpha=16, dropout=0.05,
                               target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
                               adapter_type="lora"),
    "lora r16 all": HeavyGenes(rank=16, alpha=32, dropout=0.0,
                               target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                               "up_proj", "down_proj"), adapter_type="lora"),
    "dora r8 qv": HeavyGenes(rank=8, alpha=16, dropout=0.0, target_modules=("q_proj", "v_proj"),
                             adapter_type="dora"),
}  # fmt: skip
KNOBS = Knobs(temperature=0.3, top_p=0.95, top_k=40, repetition_penalty=1.0, max_new_tokens=256)


@dataclass(frozen=True)
class Score:
    bugfix: float
    fixed_at_k: int
    syntax: float


def score(problems: list[Problem], candidates: list[str], samples: int) -> Score:
    """Candidates come problem by problem, `samples` each (the order generate is called in)."""
    fractions, parsed, fixed = [], [], 0
    for index, problem in enumerate(problems):
        runs = [run_candidate(problem, c) for c in candidates[index * samples : (index + 1) * samples]]
        fractions += [r.passed / r.total if r.total else 0.0 for r in runs]
        parsed += [r.syntax_ok for r in runs]
        fixed += any(r.fixed for r in runs)
    return Score(statistics.fmean(fractions), fixed, statistics.fmean(parsed))


def model_rows(
    base: LoadedModel, adapter: Path | None, problems: list[Problem], config: Config, seed: int,
    greedy: bool,
) -> tuple[Score, float]:
    samples = 1 if greedy else config.benchmark.samples
    prompts = [build_prompt(p.name, p.buggy_source, config.benchmark.prompt_style)
               for p in problems for _ in range(samples)]  # fmt: skip
    started = time.perf_counter()
    raw = generate_for_genome(base, adapter, prompts, KNOBS, seed, config.generation, greedy=greedy)
    seconds = time.perf_counter() - started
    candidates = [extract_candidate(text, p.name, p.buggy_source)
                  for text, p in zip(raw, (p for p in problems for _ in range(samples)), strict=True)]  # fmt: skip
    return score(problems, candidates, samples), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: config's)")
    parser.add_argument("--repeats", type=int, default=3, help="sampled generations timed per row")
    parser.add_argument("--adapters", type=int, default=len(ADAPTERS), help="how many gene settings")
    args = parser.parse_args(argv)
    config = Config()
    model = ModelConfig(name=str(args.model or config.model.name), device="cpu")
    base = load_base_model(model)
    root = config.benchmark.root
    split = load_split(root, config.benchmark.split)
    by_name = {p.name: p for p in load_benchmark(root)}
    evaluation = [by_name[n] for n in split.eval]
    pairs = training_pairs([by_name[n] for n in split.train], config.benchmark.prompt_style)
    k = config.benchmark.samples

    rows: list[tuple[str, Score]] = []
    echo = score(evaluation, [p.buggy_source for p in evaluation for _ in range(k)], k)
    rows.append(("echo (buggy program unchanged)", echo))
    generation_times: list[float] = []
    greedy, _ = model_rows(base, None, evaluation, config, 0, greedy=True)
    rows.append(("tiny, no adapter, greedy", greedy))
    for repeat in range(args.repeats):
        sampled, seconds = model_rows(base, None, evaluation, config, repeat, greedy=False)
        generation_times.append(seconds)
        if repeat == 0:
            rows.append((f"tiny, no adapter, sampled k={k}", sampled))

    train_times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="coral-bench-") as tmp:
        home = Home(tmp)
        for label, genes in list(ADAPTERS.items())[: args.adapters]:
            key = adapter_cache_key(genes, base.fingerprint, data_fingerprint(pairs), config.training)
            started = time.perf_counter()
            info = train_adapter(base, genes, pairs, config.training, home, key)
            train_times.append(time.perf_counter() - started)
            sampled, seconds = model_rows(base, info.path, evaluation, config, 0, greedy=False)
            generation_times.append(seconds)
            rows.append((f"{label}, sampled k={k}", sampled))

    print(f"model {model.name}: {len(evaluation)} eval problems x {k} samples, "
          f"{len(pairs)} training pairs, training.steps={config.training.steps}")  # fmt: skip
    print(f"{'row':40} {'bugfix':>7} {'fixed@' + str(k):>8} {'syntax':>7}")
    for label, result in rows:
        print(f"{label:40} {result.bugfix:7.3f} {result.fixed_at_k:>5}/{len(evaluation):<2} "
              f"{result.syntax:7.2f}")  # fmt: skip
    train_median = statistics.median(train_times) if train_times else float("nan")
    print(f"median adapter training job: {train_median:.1f}s over {len(train_times)}; "
          f"median genome generation ({len(evaluation)}x{k}, max_new_tokens="
          f"{KNOBS.max_new_tokens}): {statistics.median(generation_times):.1f}s "
          f"over {len(generation_times)}")  # fmt: skip
    print(json.dumps({"rows": {label: vars(r) for label, r in rows},
                      "train_seconds_median": train_median,
                      "generate_seconds_median": statistics.median(generation_times)}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
