"""How good and how fast the offline tiny model is, on held-out bug instances and problems.

    python bench/tiny_model.py                        # data/models/tiny-code, k=5
    python bench/tiny_model.py --model DIR --reevals 3 --adapters 4

Held-out instances: the eval side of data/mutants (`coral bench mutate data/problems`, families
the model never trained on). Rows: echo (the buggy program unchanged: fixes nothing, passes
every case the bug does not touch); the model without adapter, greedy and sampled at k (fixed@k:
an instance counts when one of its k answers passes every case), re-evaluated with `--reevals`
seeds for the noise; the bundled eval problems (data/problems) at k; LoRA/DoRA adapters with
`--adapters` heavy-gene settings trained through coral.model.train on the TRAIN side of
data/mutants (one pair per instance; `--adapter-data` swaps in mutants of the train programs or
synthetic stdlib bugs), each re-evaluated like the base. Knobs: the middle of the
default knob ranges (what an untuned genome gets). Timings: median wall seconds of one genome's
generation over the held-out instances x k and of one adapter training job. Prints a table,
then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from coral.benchmark.extract import extract
from coral.benchmark.loader import load_benchmark
from coral.benchmark.mutations import BUG_CLASSES
from coral.benchmark.problem import Problem
from coral.benchmark.prompts import PromptStyle, build_prompt, build_target
from coral.benchmark.split import load_split
from coral.config import REPO_ROOT, Config, ModelConfig
from coral.evolution.genome import HeavyGenes, Knobs
from coral.home import Home
from coral.model.adapters import adapter_cache_key, data_fingerprint
from coral.model.corpus import build_corpus, inject_bug
from coral.model.generate import generate_for_genome
from coral.model.loading import LoadedModel, load_base_model
from coral.model.train import MUTANTS_PER_CLASS, program_mutant_pairs, train_adapter, training_pairs
from coral.rng import stream
from coral.run.evaluate import instances_of
from coral.sandbox.runner import run_candidate

INSTANCES = REPO_ROOT / "data" / "mutants"
PROBLEMS = REPO_ROOT / "data" / "problems"
ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTERS = {
    "lora r4 qv": HeavyGenes(rank=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj"),
                             adapter_type="lora"),
    "lora r16 all": HeavyGenes(rank=16, alpha=32, dropout=0.0, target_modules=ALL, adapter_type="lora"),
    "lora r8 mlp a64": HeavyGenes(rank=8, alpha=64, dropout=0.0,
                                  target_modules=("gate_proj", "up_proj", "down_proj"), adapter_type="lora"),
    "dora r8 qv": HeavyGenes(rank=8, alpha=16, dropout=0.0, target_modules=("q_proj", "v_proj"),
                             adapter_type="dora"),
    "lora r2 o": HeavyGenes(rank=2, alpha=2, dropout=0.1, target_modules=("o_proj",), adapter_type="lora"),
    "lora r64 all a128": HeavyGenes(rank=64, alpha=128, dropout=0.0, target_modules=ALL, adapter_type="lora"),
}  # fmt: skip
# What the adapters train on (--adapter-data). The run's adapters train on "instances"; the others
# ask whether more or other data lifts the classes the base withheld (bench/RESULTS.md).
ADAPTER_DATA = ("instances", "program-mutants", "stdlib", "stdlib-withheld", "instances+stdlib-withheld")
STDLIB_PAIRS = 1500  # synthetic stdlib pairs: ~5 epochs' worth of 80 steps x batch 4


def stdlib_pairs(classes: list[str] | None, count: int = STDLIB_PAIRS) -> list[tuple[str, str]]:
    """Synthetic bugs (of `classes`, or any) in standard-library functions: the base's own kind of
    data, never a benchmark program."""
    corpus = build_corpus(PROBLEMS)
    functions = [f for f in corpus.functions if not f.origin.startswith("problems/")]
    rng = stream(0, "bench-tiny/stdlib")
    pairs: list[tuple[str, str]] = []
    for index in rng.permutation(len(functions)):
        function = functions[int(index)]
        injected = inject_bug(function.source, rng, classes or BUG_CLASSES)
        if injected is None:
            continue
        fixed = function.source.strip("\n") + "\n"
        prompt, target = build_prompt(function.name, injected[0]), build_target(injected[0], fixed)
        if len(prompt) + len(target) > 1500:  # characters: keeps every pair within training.max_length
            continue
        pairs.append((prompt, target))
        if len(pairs) == count:
            break
    return pairs


def adapter_pairs(kind: str, root: Path, train: list[Problem], style: PromptStyle,
                  withheld: list[str] | None) -> list[tuple[str, str]]:
    if kind.endswith("withheld") and not withheld:
        raise SystemExit(f"--adapter-data {kind}: the model withheld no bug class")
    if kind == "program-mutants":
        return program_mutant_pairs(root, train, style)
    if kind == "stdlib":
        return stdlib_pairs(None)
    if kind == "stdlib-withheld":
        return stdlib_pairs(withheld)
    instances = training_pairs(train, style)
    return instances + stdlib_pairs(withheld, 300) if kind == "instances+stdlib-withheld" else instances


def default_knobs(config: Config) -> Knobs:
    """The middle of each knob range, no repetition penalty, the longest answer allowed."""
    space = config.knobs
    return Knobs(temperature=round(sum(space.temperature) / 2, 6), top_p=round(sum(space.top_p) / 2, 6),
                 top_k=int(round(sum(space.top_k) / 2)), repetition_penalty=space.repetition_penalty[0],
                 max_new_tokens=max(space.max_new_tokens))  # fmt: skip


@dataclass(frozen=True)
class Score:
    fixed: int  # problems fixed by at least one of k answers
    total: int
    bugfix: float  # mean share of cases passed over problems x answers
    syntax: float  # share of candidates that compile
    edits: float  # share of answers that were line edits applied to the program
    bad_edits: float  # share of answers that were edits that could not be applied
    solved: tuple[bool, ...] = ()  # per problem: fixed by one of its k answers (paired comparisons)

    @property
    def rate(self) -> float:
        return self.fixed / self.total


class Scorer:
    """Runs candidates in the sandbox, each distinct (problem, candidate) once."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, str], tuple[int, int, bool]] = {}

    def run(self, items: list[tuple[Problem, str]]) -> list[tuple[int, int, bool]]:
        todo = {(p.name, c): (p, c) for p, c in items if (p.name, c) not in self.cache}
        with ThreadPoolExecutor(max_workers=2) as pool:
            for key, result in zip(todo, pool.map(lambda pc: self._one(*pc), todo.values()), strict=True):
                self.cache[key] = result
        return [self.cache[(p.name, c)] for p, c in items]

    @staticmethod
    def _one(problem: Problem, candidate: str) -> tuple[int, int, bool]:
        try:
            compile(candidate, problem.name, "exec")
        except (SyntaxError, ValueError):
            return 0, 1, False  # cannot pass anything: no need to run it
        run = run_candidate(problem, candidate)
        return run.passed, run.total, run.fixed


def score(scorer: Scorer, problems: list[Problem], raws: list[str], samples: int) -> Score:
    """Answers come problem by problem, `samples` each (the order generate is called in)."""
    owners = [p for p in problems for _ in range(samples)]
    found = [extract(raw, p.name, p.buggy_source) for raw, p in zip(raws, owners, strict=True)]
    runs = scorer.run([(p, f.source) for p, f in zip(owners, found, strict=True)])
    solved = tuple(any(r[2] for r in runs[i * samples : (i + 1) * samples]) for i in range(len(problems)))
    fixed = sum(solved)
    compiles = []
    for f in found:
        try:
            compile(f.source, "c", "exec")
            compiles.append(True)
        except (SyntaxError, ValueError):
            compiles.append(False)
    return Score(fixed, len(problems), statistics.fmean(p / t if t else 0.0 for p, t, _ in runs),
                 statistics.fmean(compiles), statistics.fmean(f.method == "edit" for f in found),
                 statistics.fmean(f.method == "bad_edit" for f in found), solved)  # fmt: skip


def evaluate(base: LoadedModel, adapter: Path | None, problems: list[Problem], config: Config,
             knobs: Knobs, samples: int, seed: int, greedy: bool, scorer: Scorer) -> tuple[Score, float]:  # fmt: skip
    style = config.benchmark.prompt_style
    prompts = [build_prompt(p.name, p.buggy_source, style) for p in problems for _ in range(samples)]
    started = time.perf_counter()
    raws = generate_for_genome(base, adapter, prompts, knobs, seed, config.generation, greedy=greedy)
    seconds = time.perf_counter() - started
    result = score(scorer, problems, raws, samples)
    print(f"  ({len(problems)}x{samples}, seed {seed}, adapter {adapter is not None}: fixed {result.fixed}, "
          f"generation {seconds:.1f}s)", flush=True)  # fmt: skip
    return result, seconds


def transformers_generate(base: LoadedModel, prompts: list[str], knobs: Knobs, seed: int,
                          batch_size: int) -> list[str]:  # fmt: skip
    """The baseline: transformers' own `generate` over left-padded chunks, as coral.model.generate
    did before its own decoding loop (every sample re-reads its prompt; a row stuck in a loop
    holds its chunk until max_new_tokens)."""
    import torch
    from transformers import GenerationConfig as HFGenerationConfig

    from coral.benchmark.prompts import END_OF_ANSWER
    from coral.model.generate import cut_at_end

    tokenizer, texts = base.tokenizer, []
    settings = HFGenerationConfig(max_new_tokens=knobs.max_new_tokens, do_sample=True,
                                  temperature=knobs.temperature, top_p=knobs.top_p, top_k=knobs.top_k,
                                  repetition_penalty=knobs.repetition_penalty, stop_strings=[END_OF_ANSWER],
                                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    torch.manual_seed(seed)
    for start in range(0, len(prompts), batch_size):
        rows = [tokenizer(p)["input_ids"] for p in prompts[start : start + batch_size]]
        width = max(map(len, rows))
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        with torch.inference_mode():
            out = base.model.generate(input_ids=ids, attention_mask=mask, generation_config=settings,  # type: ignore[operator]  # a causal LM (GenerationMixin); PreTrainedModel's type lacks it
                                      tokenizer=tokenizer)  # fmt: skip
        texts += [cut_at_end(tokenizer.decode(row, skip_special_tokens=True, clean_up_tokenization_spaces=False))  # type: ignore[arg-type]  # one row decodes to one str
                  for row in out[:, width:]]  # fmt: skip
    return texts


def echo(scorer: Scorer, problems: list[Problem]) -> Score:
    return score(scorer, problems, [f"```python\n{p.buggy_source}```\n" for p in problems], 1)


def side(root: Path, name: str, classes: list[str] | None = None) -> list[Problem]:
    chosen = set(getattr(load_split(root), name))
    if classes:
        chosen &= instances_of(root, classes)
    return [p for p in load_benchmark(root) if p.name in chosen]


def paired(a: list[Score], b: list[Score]) -> tuple[float, float]:
    """Mean and SE over problems of (a solved - b solved), each averaged over the seeds: the
    difference of two settings on the same instances, without the between-instance spread."""
    n = a[0].total
    diffs = [statistics.fmean(s.solved[i] for s in a) - statistics.fmean(s.solved[i] for s in b) for i in range(n)]
    return statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(n)


def mean_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return mean, se


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: config's)")
    parser.add_argument("--samples", type=int, default=5, help="k: answers per instance")
    parser.add_argument("--reevals", type=int, default=2, help="sampled re-evaluations (seeds) per row")
    parser.add_argument("--adapters", type=int, default=4, help="how many heavy-gene settings")
    parser.add_argument("--instances", type=Path, default=INSTANCES, help="held-out instance benchmark")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: what each of 2 workers gets on 2 cores)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip timing transformers' generate on the same rows (the ratio's baseline)")
    parser.add_argument("--limit", type=int, default=None, help="first N held-out instances only (smoke runs)")
    parser.add_argument("--classes", default=None, metavar="CLASS,...",
                        help="held-out instances of these bug classes only (default: every class); "
                             "'withheld': the classes the model's build withheld")
    parser.add_argument("--skip-problems", action="store_true", help="skip the bundled eval problems row")
    parser.add_argument("--settings", default=None, metavar="LABEL;...",
                        help="adapter settings by label, ';'-separated (default: the first --adapters)")
    parser.add_argument("--steps", type=int, default=None, help="adapter training steps (default: training.steps)")
    parser.add_argument("--adapter-data", choices=ADAPTER_DATA, default="instances",
                        help="what adapters train on: the TRAIN side's instances (as a run does), up to "
                             f"{MUTANTS_PER_CLASS} mutants per bug class of each train program, or "
                             f"{STDLIB_PAIRS} synthetic stdlib bugs (any class, or the withheld ones)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    config = Config()
    if args.steps is not None:
        config = config.model_copy(update={"training": config.training.model_copy(update={"steps": args.steps})})
    model = ModelConfig(name=str(args.model or config.model.name), device="cpu")
    base = load_base_model(model)
    knobs = default_knobs(config)
    k = args.samples
    classes = None
    meta_path = Path(model.name) / "coral_tiny_meta.json"
    withheld = (list(json.loads(meta_path.read_text())["spec"].get("withheld_classes") or [])
                if meta_path.is_file() else [])  # fmt: skip
    if args.classes == "withheld":
        classes = withheld
        if not classes:
            parser.error(f"{model.name} withheld no bug class")
    elif args.classes:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    held_out, train = side(args.instances, "eval", classes)[: args.limit], side(args.instances, "train")
    problems = side(PROBLEMS, "eval")
    pairs = adapter_pairs(args.adapter_data, args.instances, train, config.benchmark.prompt_style, withheld)
    scorer = Scorer()
    rows: dict[str, dict] = {}
    generation_times: list[float] = []

    runs: dict[str, list[Score]] = {}

    def row(label: str, scores: list[Score]) -> None:
        runs[label] = scores
        mean, se = mean_se([s.rate for s in scores])
        rows[label] = {"fixed": [s.fixed for s in scores], "total": scores[0].total, "rate": mean,
                       "rate_se": se, "bugfix": statistics.fmean(s.bugfix for s in scores),
                       "syntax": statistics.fmean(s.syntax for s in scores),
                       "edits": statistics.fmean(s.edits for s in scores),
                       "bad_edits": statistics.fmean(s.bad_edits for s in scores)}  # fmt: skip
        print(f"{label:34} fixed {'/'.join(map(str, rows[label]['fixed'])):>11} of {scores[0].total:<3} "
              f"rate {mean:.3f} (se {se:.3f}) passed {rows[label]['bugfix']:.3f} syntax "
              f"{rows[label]['syntax']:.2f} edits {rows[label]['edits']:.2f} bad {rows[label]['bad_edits']:.2f}",
              flush=True)  # fmt: skip

    print(f"model {model.name}: {len(held_out)} held-out instances, {len(problems)} eval problems, "
          f"k={k}, knobs {knobs.model_dump()}, {len(pairs)} adapter training pairs ({args.adapter_data}), "
          f"training.steps={config.training.steps}", flush=True)  # fmt: skip
    row("echo, held-out instances", [echo(scorer, held_out)])
    row("echo, eval problems", [echo(scorer, problems)])
    row("no adapter greedy, instances", [evaluate(base, None, held_out, config, knobs, 1, 0, True, scorer)[0]])
    sampled = []
    for seed in range(args.reevals):
        result, seconds = evaluate(base, None, held_out, config, knobs, k, seed, False, scorer)
        sampled.append(result)
        generation_times.append(seconds)
    row(f"no adapter k={k}, instances", sampled)
    baseline_seconds = float("nan")
    if not args.no_baseline:
        prompts = [build_prompt(p.name, p.buggy_source, config.benchmark.prompt_style)
                   for p in held_out for _ in range(k)]  # fmt: skip
        started = time.perf_counter()
        baseline = transformers_generate(base, prompts, knobs, 0, config.generation.batch_size)
        baseline_seconds = time.perf_counter() - started
        rows_scored = score(scorer, held_out, baseline, k)
        print(f"  baseline (transformers' generate, chunks of {config.generation.batch_size}): "
              f"{baseline_seconds:.1f}s, fixed {rows_scored.fixed}; ours {generation_times[0]:.1f}s: ratio "
              f"{baseline_seconds / generation_times[0]:.1f}x", flush=True)  # fmt: skip
    if not args.skip_problems:
        row(f"no adapter k={k}, eval problems",
            [evaluate(base, None, problems, config, knobs, k, 0, False, scorer)[0]])

    train_times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="coral-bench-") as tmp:
        home = Home(tmp)
        chosen = ([(label, ADAPTERS[label]) for label in args.settings.split(";")] if args.settings
                  else list(ADAPTERS.items())[: args.adapters])
        for label, genes in chosen:
            key = adapter_cache_key(genes, base.fingerprint, data_fingerprint(pairs), config.training)
            started = time.perf_counter()
            info = train_adapter(base, genes, pairs, config.training, home, key)
            train_times.append(time.perf_counter() - started)
            scores = []
            for seed in range(args.reevals):
                result, seconds = evaluate(base, info.path, held_out, config, knobs, k, seed, False, scorer)
                scores.append(result)
                generation_times.append(seconds)
            row(f"{label} k={k}, instances", scores)

    settings = [label for label in rows if label.endswith(f"k={k}, instances")]
    best = max(settings, key=lambda label: rows[label]["rate"])
    worst = min(settings, key=lambda label: rows[label]["rate"])
    gap = rows[best]["rate"] - rows[worst]["rate"]
    gap_se = math.hypot(rows[best]["rate_se"], rows[worst]["rate_se"])
    print(f"settings spread: best {best} {rows[best]['rate']:.3f}, worst {worst} {rows[worst]['rate']:.3f}, "
          f"gap {gap:.3f} vs 2 x se(gap) {2 * gap_se:.3f}")  # fmt: skip
    adapters = [label for label in settings if not label.startswith("no adapter")]
    lift: dict[str, float | str] = {}
    if adapters:
        top = max(adapters, key=lambda label: rows[label]["rate"])
        low = min(adapters, key=lambda label: rows[label]["rate"])
        base_label = f"no adapter k={k}, instances"
        lift_mean, lift_se = paired(runs[top], runs[base_label])
        spread_mean, spread_se = paired(runs[top], runs[low])
        lift = {"best_adapter": top, "minus_no_adapter": lift_mean, "paired_se": lift_se,
                "worst_adapter": low, "best_minus_worst": spread_mean, "best_minus_worst_paired_se": spread_se}
        print(f"best adapter {top} minus no adapter: {lift_mean:+.3f} (paired se {lift_se:.3f}, "
              f"{lift_mean / lift_se if lift_se else float('nan'):.1f} se); best minus worst adapter ({low}): "
              f"{spread_mean:+.3f} (paired se {spread_se:.3f}, "
              f"{spread_mean / spread_se if spread_se else float('nan'):.1f} se)")  # fmt: skip
    train_median = statistics.median(train_times) if train_times else float("nan")
    gen_median = statistics.median(generation_times)
    print(f"median adapter training job {train_median:.1f}s over {len(train_times)}; median genome "
          f"generation ({len(held_out)}x{k}) {gen_median:.1f}s over {len(generation_times)}")  # fmt: skip
    print(f"baseline generation (transformers' generate) {baseline_seconds:.1f}s; ratio to our first "
          f"no-adapter pass {baseline_seconds / generation_times[0]:.1f}x")  # fmt: skip
    print(json.dumps({"rows": rows, "train_seconds_median": train_median, "generate_seconds_median": gen_median,
                      "baseline_generate_seconds": baseline_seconds,
                      "spread": {"best": best, "worst": worst, "gap": gap, "gap_se": gap_se}, "lift": lift,
                      "classes": classes, "adapter_data": args.adapter_data, "adapter_pairs": len(pairs),
                      "knobs": knobs.model_dump(), "k": k}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
