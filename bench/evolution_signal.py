"""Does evolution find anything? Evolution vs random search vs no adapter vs echo, same budget.

    python bench/evolution_signal.py                      # 3 seeds, population 3, 2 generations
    python bench/evolution_signal.py --seeds 5 --generations 4 --per-family 2

Held-out problems: the first `--per-family` instances of every eval family of data/mutants
(`coral bench mutate data/problems`); adapters train on the first `--per-family` instances of
every train family. Each strategy runs the engine's selection loop in this process
(coral.evolution.selection.Evolution: initial population, NSGA-II, breeding) with the engine's
noise control (one sampling seed per generation for every genome, survivors evaluated again and
averaged, Evolution.fold); a genome's evaluation is the engine's stages batched (train or reuse
its adapter, one generate call, coral.run.evaluate.score_answers). The same number of genome
evaluations for evolution and random search. At the end each run's best survivor (highest
weighted fitness of its averaged scores) is evaluated again on `--fresh` new sampling seeds,
and the table reports that fresh score beside the score the run recorded (the gap is the
winner's curse). no-adapter (the base model at the config's default knobs) and echo (the buggy
program unchanged) are evaluated on the same seeds. Rows: mean ± standard error over seeds.

Prints the table and one JSON line; the figures go in bench/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from coral.benchmark.loader import load_benchmark
from coral.benchmark.mutate import read_manifest
from coral.benchmark.prompts import build_prompt
from coral.config import Config, load_config
from coral.evolution.genome import Genome, Knobs
from coral.evolution.selection import OBJECTIVES, Evolution, Scored, weighted_fitness
from coral.home import Home
from coral.rng import stream_seed
from coral.run.engine import generation_seed
from coral.run.evaluate import default_knobs, echo_answer, mean_se, score_answers, summarise
from coral.sandbox.runner import RunnerLimits, reference

REPO = Path(__file__).resolve().parents[1]

MUTANTS = REPO / "data" / "mutants"
CONFIG = REPO / "configs" / "local.yaml"


def subset(per_family: int) -> tuple[list[Any], list[Any]]:
    """(train problems, eval problems): the first `per_family` instances of each family."""
    manifest = read_manifest(MUTANTS)
    assert manifest is not None, "data/mutants has no mutants.json"
    sides = {name: info["side"] for name, info in manifest["families"].items()}
    problems = {p.name: p for p in load_benchmark(MUTANTS)}
    chosen: dict[str, list[Any]] = {"train": [], "eval": []}
    taken: dict[str, int] = {}
    for inst in manifest["instances"]:  # in family order, each family's instances in order
        family = inst["family"]
        if taken.get(family, 0) < per_family:
            taken[family] = taken.get(family, 0) + 1
            chosen[sides[family]].append(problems[inst["name"]])
    return chosen["train"], chosen["eval"]


class Bench:
    def __init__(self, config: Config, train: list[Any], evaluation: list[Any], home: Home) -> None:
        from coral.model.loading import load_base_model
        from coral.model.train import training_pairs

        self.config, self.problems, self.home = config, evaluation, home
        self.base = load_base_model(config.model)
        self.pairs = training_pairs(train, config.benchmark.prompt_style)
        self.prompts = [build_prompt(p.name, p.buggy_source, config.benchmark.prompt_style)
                        for p in evaluation]
        self.limits = RunnerLimits.from_config(config.sandbox)
        for problem in evaluation:  # one at a time: the pytest-style split is not thread-safe
            reference(problem, self.limits)
        self.adapters: dict[str, Path] = {}
        self.evaluations = 0
        self.trained = 0

    def adapter(self, genome: Genome) -> Path:
        from coral.model.adapters import adapter_cache_key, data_fingerprint
        from coral.model.train import train_adapter

        key = adapter_cache_key(genome.genes, self.base.fingerprint, data_fingerprint(self.pairs),
                                self.config.training)
        if key not in self.adapters:
            info = train_adapter(self.base, genome.genes, self.pairs, self.config.training,
                                 self.home, key)
            self.adapters[key] = Path(info.path) if info.path else self.home.adapter_dir(key)
            self.trained += 1
        return self.adapters[key]

    def answers(self, adapter: Path | None, knobs: Knobs, seed: int) -> dict[str, float]:
        from coral.model.generate import generate_for_genome

        k = self.config.benchmark.samples
        rows = [p for p in self.prompts for _ in range(k)]
        texts = generate_for_genome(self.base, adapter, rows, knobs, seed, self.config.generation)
        grouped = [texts[i * k:(i + 1) * k] for i in range(len(self.prompts))]
        return self.score(grouped, k)

    def score(self, grouped: list[list[str]], k: int) -> dict[str, float]:
        summary = summarise(score_answers(self.problems, grouped, self.limits, MUTANTS), k)
        out = {n: summary[n] for n in OBJECTIVES}
        out["fixed_at_k"] = summary["fixed_at_k"]
        out["fitness"] = weighted_fitness(out, self.config.objectives.weights)
        self.evaluations += 1
        return out

    def genome(self, genome: Genome, seed: int) -> dict[str, float]:
        return self.answers(self.adapter(genome), genome.knobs, seed)

    def echo(self) -> dict[str, float]:
        return self.score([[echo_answer(p)] for p in self.problems], 1)


def run_strategy(bench: Bench, config: Config, fresh: int) -> dict[str, Any]:
    """One run's loop as the engine does it; then its best survivor on fresh seeds."""
    evo = Evolution(config)
    population = evo.initial_population()
    evaluations = 0
    for generation in range(config.generations):
        ids = {g.id for g in population}
        again = [s.genome for s in evo.survivors if s.genome.id not in ids]
        seed = generation_seed(config.seed, generation)
        raw = {g.id: bench.genome(g, seed) for g in population + again}
        evaluations += len(raw)
        means = evo.fold(raw)
        evo.select(generation, [Scored(g, {n: means[g.id][n] for n in OBJECTIVES}) for g in population])
        if generation < config.generations - 1:
            population = evo.breed(generation)
    weights = config.objectives.weights
    best = max(evo.survivors, key=lambda s: (weighted_fitness(s.objectives, weights), s.genome.id))
    recorded = best.objectives
    again_scores = [bench.genome(best.genome, fresh_seed(config.seed, i)) for i in range(fresh)]
    return {"recorded_bugfix": recorded["bugfix"], "evaluations": evaluations,
            "best": best.genome.id, "recorded_count": evo.count(best.genome.id),
            **{f"fresh_{n}": sum(s[n] for s in again_scores) / fresh
               for n in ("bugfix", "fixed_at_k", "fitness", "syntax")}}


def fresh_seed(seed: int, index: int) -> int:
    """Sampling seeds no generation of the run used."""
    return stream_seed(seed, None, None, f"signal-fresh-{index}") % (2**63 - 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds run are first-seed .. first-seed + seeds - 1")
    parser.add_argument("--merge", nargs="+", type=Path, default=None, metavar="LOG",
                        help="print one table from the last JSON line of each log (runs of "
                             "different seeds in parallel processes), run nothing")
    parser.add_argument("--population", type=int, default=3)
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument("--per-family", type=int, default=1)
    parser.add_argument("--fresh", type=int, default=1, help="fresh seeds for the final re-evaluation")
    parser.add_argument("--steps", type=int, default=6, help="adapter training steps")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: seeds run as parallel processes on 2 cores)")
    args = parser.parse_args()
    if args.merge:
        return merge(args.merge)

    import torch

    torch.set_num_threads(args.threads)
    train, evaluation = subset(args.per_family)
    started = time.time()
    cpu0 = time.process_time()
    rows: dict[str, list[dict[str, Any]]] = {"evolution": [], "random": [], "no-adapter": [], "echo": []}
    with tempfile.TemporaryDirectory(prefix="coral-signal-") as tmp:
        home = Home(Path(tmp)).ensure()
        base_config = load_config(CONFIG, [
            f"population={args.population}", f"generations={args.generations}",
            f"training.steps={args.steps}", f"knobs.max_new_tokens=[{args.max_new_tokens}]",
            "benchmark.samples=1"])
        bench = Bench(base_config, train, evaluation, home)
        echo = bench.echo()  # deterministic: the same on every seed
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for strategy in ("evolution", "random"):
                config = base_config.model_copy(update={"seed": seed, "strategy": strategy})
                result = run_strategy(bench, config, args.fresh)
                rows[strategy].append(result)
                print(f"seed {seed} {strategy}: {json.dumps(result)}", flush=True)
            knobs = default_knobs(base_config.knobs)
            seeds = [generation_seed(seed, 0)] + [fresh_seed(seed, i) for i in range(args.fresh)]
            plain = [bench.answers(None, knobs, s) for s in seeds]
            rows["no-adapter"].append({"recorded_bugfix": plain[0]["bugfix"], **{
                f"fresh_{n}": sum(p[n] for p in plain[1:]) / args.fresh
                for n in ("bugfix", "fixed_at_k", "fitness", "syntax")}})
            rows["echo"].append({"recorded_bugfix": echo["bugfix"], **{
                f"fresh_{n}": echo[n] for n in ("bugfix", "fixed_at_k", "fitness", "syntax")}})
            print_table(rows, bench, args, train, evaluation, started, cpu0)
    return 0


def merge(logs: list[Path]) -> int:
    """One table over the runs recorded in several logs (each log's last JSON line)."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for log in logs:
        last = [line for line in log.read_text().splitlines() if line.startswith("{")][-1]
        for name, results in json.loads(last)["runs"].items():
            rows.setdefault(name, []).extend(results)
    print(f"{len(rows['evolution'])} seeds from {len(logs)} logs")
    print(" | ".join(("strategy", "recorded bugfix", "fresh bugfix", "fresh fixed@1",
                      "fresh fitness", "fresh syntax")))
    for name, results in rows.items():
        cells = [mean_se([r[key] for r in results]) for key in (
            "recorded_bugfix", "fresh_bugfix", "fresh_fixed_at_k", "fresh_fitness", "fresh_syntax")]
        print(" | ".join([name] + [f"{m:.3f} ± {s:.3f}" for m, s in cells]))
    return 0


def print_table(rows: dict[str, list[dict[str, Any]]], bench: Bench, args: argparse.Namespace,
                train: list[Any], evaluation: list[Any], started: float, cpu0: float) -> None:
    """The table so far (after every seed, so a cut-short run still reports what it did)."""
    wall, cpu = time.time() - started, time.process_time() - cpu0
    families = len({p.name.rsplit("_", 1)[0] for p in evaluation})
    seeds = len(rows["evolution"])
    print(f"\n{len(evaluation)} held-out instances ({families} eval families), {len(train)} "
          f"training instances, {seeds} seed(s), population {args.population} x "
          f"{args.generations} generations, {args.fresh} fresh seed(s) for the final "
          f"re-evaluation; {bench.evaluations} evaluations, {bench.trained} adapters trained")
    print(" | ".join(("strategy", "recorded bugfix", "fresh bugfix", "fresh fixed@1",
                      "fresh fitness", "fresh syntax")))
    table = {}
    for name, results in rows.items():
        cells = {key: mean_se([r[key] for r in results]) for key in (
            "recorded_bugfix", "fresh_bugfix", "fresh_fixed_at_k", "fresh_fitness", "fresh_syntax")}
        table[name] = {k: {"mean": m, "se": s} for k, (m, s) in cells.items()}
        print(" | ".join([name] + [f"{m:.3f} ± {s:.3f}" for m, s in cells.values()]))
    print(f"wall {wall:.0f} s, CPU of this process {cpu:.0f} s (sandboxes run in children)")
    print(json.dumps({"table": table, "runs": rows, "wall_seconds": wall, "cpu_seconds": cpu,
                      "instances": len(evaluation), "seeds": seeds,
                      "evaluations": bench.evaluations, "adapters": bench.trained}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
