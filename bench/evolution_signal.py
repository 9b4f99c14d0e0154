"""Does evolution find anything? configs/local.yaml as shipped: evolution vs random search vs the
no-adapter and echo baselines, on the same instances and seeds.

    python -P bench/evolution_signal.py                          # run seeds 0, 1, 2
    python -P bench/evolution_signal.py --first-seed 1 --seeds 1 > s1.log   # one seed per process
    python -P bench/evolution_signal.py --merge s0.log s1.log s2.log        # one table from several
    python -P bench/evolution_signal.py --runs RUN_ID ...   # finished `coral run`s of CORAL_HOME

With `--runs`, nothing evolves here: the runs are real `coral run configs/local.yaml --set seed=S
[--set strategy=random]` runs (any backend), ingested into CORAL_HOME's store; each run's best
genome is coral.analysis.best's (highest mean fitness over its evaluations), evaluated again here
with the adapter that run trained for it. Without it:

The experiment is the config (population, generations, samples, its split's eval instances,
adapters trained on its split's train instances, training steps, knob ranges); `--set KEY=VALUE`
changes it the way `coral run --set` does. Each strategy (evolution, random search) runs the
engine's selection loop in this process (coral.evolution.selection.Evolution: initial population,
threshold gate, NSGA-II, breeding) with the engine's noise control (one sampling seed per
generation for every genome, survivors evaluated again and averaged, Evolution.fold); a genome's
evaluation is the engine's stages batched (train or reuse its adapter, one generate call,
coral.run.evaluate.score_answers), and random search gets exactly as many evaluations.

At the end each run's best survivor (highest weighted fitness of its averaged scores), and the
base model without adapter at the config's default knobs, are evaluated again on `--fresh` new
sampling seeds with `--fresh-samples` answers per instance (k=5 by default): fixed@k is the
measure. Differences (evolution minus no adapter, evolution minus random search) are paired by
run seed: mean and standard error over the seeds. Echo (the buggy program unchanged) fixes
nothing by construction and is printed for its fitness. Prints the table and one JSON line; the
figures go in bench/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from coral.analysis.genome_means import rank_best
from coral.benchmark.loader import load_benchmark
from coral.benchmark.prompts import build_prompt, build_target
from coral.benchmark.split import load_split, split_for_config
from coral.config import Config, load_config
from coral.errors import CoralError
from coral.evolution.genome import Genome, Knobs
from coral.evolution.selection import CANDIDATE_OBJECTIVES, OBJECTIVES, Evolution, Scored, weighted_fitness
from coral.home import Home
from coral.run.engine import generation_seed
from coral.run.evaluate import default_knobs, echo_answer, mean_se, score_answers, summarise
from coral.run.reevaluation import fresh_seeds
from coral.run.registry import run_config, trained_adapter
from coral.sandbox.runner import RunnerLimits, reference

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "local.yaml"
MEASURES = ("fixed_at_k", "bugfix", "fitness", "syntax", "fix_chance")


class Bench:
    """The engine's stages for one genome at a time, adapters cached by their content key."""

    def __init__(self, config: Config, home: Home, eval_names: list[str] | None = None) -> None:
        from coral.model.loading import load_base_model
        from coral.model.train import adapter_data

        split = split_for_config(config)
        problems = {p.name: p for p in load_benchmark(config.benchmark.root)}
        self.train = [problems[n] for n in split.train]
        self.problems = [problems[n] for n in (eval_names or split.eval)]
        self.config, self.home = config, home
        self.base = load_base_model(config.model)
        self.pairs = adapter_data(config.training, config.benchmark.root, self.train, config.benchmark.prompt_style)
        self.prompts = [build_prompt(p.name, p.buggy_source, config.benchmark.prompt_style)
                        for p in self.problems]
        self.references = [build_target(p.buggy_source, p.correct_source) for p in self.problems]
        self.limits = RunnerLimits.from_config(config.sandbox)
        for problem in self.problems:  # one at a time: the pytest-style split is not thread-safe
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

    def chances(self, adapter: Path | None, knobs: Knobs) -> list[float]:
        """Each instance's fix_chance (coral.model.likelihood): computed, no answer sampled."""
        from coral.model.likelihood import fix_chances

        return fix_chances(self.base, adapter, self.prompts, self.references, knobs, self.config.generation,
                           self.config.objectives.fix_chance_k)

    def model_only(self, genome: Genome) -> dict[str, Any]:
        """A search evaluation where only model objectives weigh (weight 0 on every sampled one):
        selection sees exactly what the engine's would, so nothing is sampled; the sampled
        objectives read 0 and are not reported."""
        chances = self.chances(self.adapter(genome), genome.knobs)
        out: dict[str, Any] = {**dict.fromkeys(CANDIDATE_OBJECTIVES, 0.0), "fixed_at_k": 0.0,
                               "fix_chance": sum(chances) / len(chances)}
        out["fitness"] = weighted_fitness(out, self.config.objectives.weights)
        self.evaluations += 1
        return out

    def answers(self, adapter: Path | None, knobs: Knobs, seed: int, k: int) -> dict[str, Any]:
        from coral.model.generate import generate_for_genome
        rows = [p for p in self.prompts for _ in range(k)]
        texts = generate_for_genome(self.base, adapter, rows, knobs, seed, self.config.generation)
        chances = self.chances(adapter, knobs)
        return self.score([texts[i * k:(i + 1) * k] for i in range(len(self.prompts))], k, chances)

    def score(self, grouped: list[list[str]], k: int, chances: list[float]) -> dict[str, Any]:
        summary = summarise(score_answers(self.problems, grouped, self.limits,
                                          self.config.benchmark.root), k)
        out: dict[str, Any] = {n: summary[n] for n in CANDIDATE_OBJECTIVES}
        out["fix_chance"] = sum(chances) / len(chances)
        out["fixed_at_k"] = summary["fixed_at_k"]
        out["fitness"] = weighted_fitness(out, self.config.objectives.weights)
        out["solved"] = [int(p["fixed"]) for p in summary["problems"]]
        self.evaluations += 1
        return out

    def genome(self, genome: Genome, seed: int, k: int | None = None) -> dict[str, Any]:
        return self.answers(self.adapter(genome), genome.knobs, seed, k or self.config.benchmark.samples)

    def echo(self) -> dict[str, Any]:
        return self.score([[echo_answer(p)] for p in self.problems], 1, [0.0] * len(self.problems))


def run_strategy(bench: Bench, config: Config, fresh: int, k: int, fresh_bench: Bench | None = None) -> dict[str, Any]:
    """One run's loop as the engine does it; then its best survivor on fresh seeds at k
    (on `fresh_bench`'s instances if given)."""
    weights = config.objectives.weights
    model_only = all(getattr(weights, n) == 0 for n in CANDIDATE_OBJECTIVES)
    evo, evaluations = selection_loop(
        config, lambda genome, seed: bench.model_only(genome) if model_only else bench.genome(genome, seed))
    best = best_survivor(evo, config)
    scores = [(fresh_bench or bench).genome(best.genome, fresh_seed(config.seed, i), k) for i in range(fresh)]
    genes = best.genome.genes
    return {"recorded_fitness": weighted_fitness(best.objectives, weights), "evaluations": evaluations,
            "best": best.genome.id, "recorded_count": evo.count(best.genome.id),
            "genes": f"{genes.adapter_type} r{genes.rank} a{genes.alpha} {'+'.join(genes.target_modules)}",
            "knobs": best.genome.knobs.model_dump(),
            **fresh_means(scores)}


def selection_loop(config: Config, evaluate: Callable[[Genome, int], dict[str, Any]]) -> tuple[Evolution, int]:
    """The engine's generations (initial population, survivors evaluated again, fold, gate +
    NSGA-II, breeding) with `evaluate(genome, sampling seed)` for the engine's stages; returns the
    final state and the number of evaluations."""
    evo = Evolution(config)
    population = evo.initial_population()
    evaluations = 0
    for generation in range(config.generations):
        ids = {g.id for g in population}
        again = [s.genome for s in evo.survivors if s.genome.id not in ids]
        seed = generation_seed(config.seed, generation)
        raw = {g.id: {n: v for n, v in evaluate(g, seed).items() if n != "solved"} for g in population + again}
        evaluations += len(raw)
        means = evo.fold(raw)
        evo.select(generation, [Scored(g, {n: means[g.id][n] for n in OBJECTIVES}) for g in population])
        # as the engine: the final rounds (evolution.final_rounds) breed nothing
        population = [] if evo.final_round(generation + 1) else evo.breed(generation)
    return evo, evaluations


def best_survivor(evo: Evolution, config: Config) -> Scored:
    """The run's pick by coral.analysis.best's rule (rank_best): among the survivors evaluated at
    least twice, the highest weighted fitness."""
    weights = config.objectives.weights
    survivors = pd.DataFrame({"run_id": "bench", "genome_id": [s.genome.id for s in evo.survivors],
                              "fitness": [weighted_fitness(s.objectives, weights) for s in evo.survivors],
                              "evaluations": [evo.count(s.genome.id) for s in evo.survivors],
                              "generation": config.generations - 1})
    best_id = rank_best(survivors)["genome_id"].iloc[0]
    return next(s for s in evo.survivors if s.genome.id == best_id)


def fresh_means(scores: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {f"fresh_{n}": sum(s[n] for s in scores) / len(scores) for n in MEASURES}
    # per instance: the share of fresh seeds on which it was fixed (for paired comparisons)
    out["solved"] = [sum(s["solved"][i] for s in scores) / len(scores) for i in range(len(scores[0]["solved"]))]
    return out


def fresh_seed(seed: int, index: int) -> int:
    """Sampling seeds no generation of the run used: `coral evaluate`'s (coral.run.reevaluation)."""
    return fresh_seeds(seed, index + 1)[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, as coral run --set")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds run are first-seed .. first-seed + seeds - 1")
    parser.add_argument("--merge", nargs="+", type=Path, default=None, metavar="LOG",
                        help="print one table from the last JSON line of each log (runs of "
                             "different seeds in parallel processes), run nothing")
    parser.add_argument("--fresh", type=int, default=2, help="fresh sampling seeds for the final re-evaluation")
    parser.add_argument("--fresh-samples", type=int, default=5, help="k of the final re-evaluation")
    parser.add_argument("--runs", nargs="+", default=None, metavar="RUN_ID",
                        help="re-evaluate the best genome of these finished runs of CORAL_HOME "
                             "(evolution and random-search runs of one config) and run nothing else")
    parser.add_argument("--fresh-on", choices=("config", "held-out"), default="config",
                        help="re-evaluate the picks on the config's eval instances, or on every "
                             "eval-side instance of the benchmark's own split (ROOT/split.json)")
    parser.add_argument("--home", type=Path, default=None,
                        help="without --runs: a CORAL_HOME whose adapters are reused (default: a new temporary one)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: seeds run as parallel processes on 2 cores)")
    args = parser.parse_args()
    if args.merge:
        rows: dict[str, list[dict[str, Any]]] = {}
        for log in args.merge:
            last = [line for line in log.read_text().splitlines() if line.startswith("{")][-1]
            for name, results in json.loads(last)["runs"].items():
                rows.setdefault(name, []).extend(results)
        print_table(rows, f"{len(rows['evolution'])} seeds from {len(args.merge)} logs")
        return 0

    import torch

    torch.set_num_threads(args.threads)
    if args.runs:
        return from_runs(args.runs, args.fresh, args.fresh_samples, args.fresh_on)
    started, cpu0 = time.time(), time.process_time()
    rows = {"evolution": [], "random": [], "no-adapter": [], "echo": []}
    with tempfile.TemporaryDirectory(prefix="coral-signal-") as tmp:
        home = Home(args.home or Path(tmp)).ensure()
        base_config = load_config(args.config, args.set)
        search = Bench(base_config, home)  # the config's eval instances: what selection sees
        # The picks and the baselines: on those, or on every eval-side instance of the benchmark.
        bench = (Bench(base_config, home, load_split(base_config.benchmark.root).eval)
                 if args.fresh_on == "held-out" else search)
        echo = bench.echo()  # deterministic: the same on every seed
        k = args.fresh_samples

        def evaluations() -> int:
            return search.evaluations + (bench.evaluations if bench is not search else 0)

        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for strategy in ("evolution", "random"):
                config = base_config.model_copy(update={"seed": seed, "strategy": strategy})
                result = run_strategy(search, config, args.fresh, k, bench)
                rows[strategy].append(result)
                print(f"seed {seed} {strategy}: {json.dumps({n: v for n, v in result.items() if n != 'solved'})}",
                      flush=True)
            knobs = default_knobs(base_config.knobs)
            plain = [bench.answers(None, knobs, fresh_seed(seed, i), k) for i in range(args.fresh)]
            rows["no-adapter"].append({"recorded_fitness": float("nan"), **fresh_means(plain)})
            rows["echo"].append({"recorded_fitness": echo["fitness"], "solved": echo["solved"],
                                 **{f"fresh_{n}": echo[n] for n in MEASURES}})
            wall, cpu = time.time() - started, time.process_time() - cpu0
            families = len({p.name.rsplit("_", 1)[0] for p in bench.problems})
            print_table(rows, f"{len(bench.problems)} held-out instances ({families} eval families), "
                        f"{len(bench.train)} training instances, {len(rows['evolution'])} seed(s), population "
                        f"{base_config.population} x {base_config.generations} generations at k="
                        f"{base_config.benchmark.samples}; best re-evaluated on {args.fresh} fresh seed(s) "
                        f"at k={k}; {evaluations()} evaluations, {search.trained} adapters (trained or found); "
                        f"wall {wall:.0f} s, CPU of this process {cpu:.0f} s (sandboxes run in children)")
            print(json.dumps({"runs": rows, "wall_seconds": wall, "cpu_seconds": cpu,
                              "instances": len(bench.problems), "evaluations": evaluations(),
                              "adapters": bench.trained}), flush=True)
    return 0


def from_runs(run_ids: list[str], fresh: int, k: int, fresh_on: str) -> int:
    """The best genome of each finished run, its own adapter, on fresh seeds; the baselines on the
    same seeds. The runs must be one experiment: the same config but for seed and strategy."""
    from coral.analysis.best import best_genome
    from coral.store.ingest import Ingestor

    started, cpu0 = time.time(), time.process_time()
    home = Home()
    ingestor = Ingestor(home, None, remote=())
    try:
        ingestor.run_once(snapshot=True)
    finally:
        ingestor.stop()
    configs = {run: run_config(home, run) for run in run_ids}

    def experiment(config: Any) -> dict[str, Any]:
        # A split file is the instances it lists: the same file under another path (a copy
        # beside an override) is the same experiment.
        shape = config.model_dump(exclude={"seed", "strategy"})
        split = config.benchmark.split
        if split is not None and Path(split).is_file():
            shape["benchmark"]["split"] = hashlib.sha256(Path(split).read_bytes()).hexdigest()
        return shape

    first = next(iter(configs.values()))
    shape = experiment(first)
    for run, config in configs.items():
        if experiment(config) != shape:
            raise SystemExit(f"run {run} is another experiment than {run_ids[0]} (configs differ beyond seed/strategy)")
    held_out = load_split(first.benchmark.root).eval if fresh_on == "held-out" else None
    bench = Bench(first, home, held_out)
    knobs = default_knobs(first.knobs)
    echo = bench.echo()
    rows: dict[str, list[dict[str, Any]]] = {"evolution": [], "random": [], "no-adapter": [], "echo": []}
    seeds: list[int] = []
    for run in sorted(run_ids, key=lambda r: (configs[r].seed, configs[r].strategy)):
        config = configs[run]
        result = pick_on_fresh_seeds(bench, run, best_genome(run, home), config.seed, fresh, k)
        rounds = config.evolution.final_rounds
        if rounds:
            # The pick as it stood before the final rounds, on the same fresh seeds: what they changed.
            before = best_genome(run, home, until=config.generations - rounds - 1)
            result["before_final_rounds"] = (
                {n: result[n] for n in ("best", "recorded_fitness", "evaluations", "genes", "fresh_fixed_at_k")}
                if before["genome_id"] == result["best"]
                else pick_on_fresh_seeds(bench, run, before, config.seed, fresh, k))
        rows["evolution" if config.strategy == "evolution" else "random"].append(result)
        print(f"{run} ({config.strategy}, seed {config.seed}): "
              f"{json.dumps({n: v for n, v in result.items() if n != 'solved'})}", flush=True)
        if config.seed not in seeds:
            seeds.append(config.seed)
            plain = [bench.answers(None, knobs, fresh_seed(config.seed, i), k) for i in range(fresh)]
            rows["no-adapter"].append({"recorded_fitness": float("nan"), "seed": config.seed, **fresh_means(plain)})
            rows["echo"].append({"recorded_fitness": echo["fitness"], "solved": echo["solved"],
                                 **{f"fresh_{n}": echo[n] for n in MEASURES}})
    wall, cpu = time.time() - started, time.process_time() - cpu0
    print_table(rows, f"{len(run_ids)} runs ({len(seeds)} seeds) of population {first.population} x "
                f"{first.generations} generations at k={first.benchmark.samples}, {len(bench.problems)} held-out "
                f"instances; best re-evaluated on {fresh} fresh seed(s) at k={k}; wall {wall:.0f} s")
    final_rounds_effect([r for name in ("evolution", "random") for r in rows[name]])
    withheld = withheld_instances(bench)
    index = [i for i, p in enumerate(bench.problems) if p.name in withheld]
    if index:
        print(f"on the {len(index)} instances of the classes the base withheld:")
        for name, results in rows.items():
            if results:
                m, se = mean_se([sum(r["solved"][i] for i in index) / len(index) for r in results])
                print(f"  {name}: fresh fixed@k {m:.3f} ± {se:.3f}")
    print(json.dumps({"runs": rows, "wall_seconds": wall, "cpu_seconds": cpu, "instances": len(bench.problems)}),
          flush=True)
    return 0


def pick_on_fresh_seeds(bench: Bench, run: str, best: dict[str, Any], seed: int, fresh: int,
                        k: int) -> dict[str, Any]:
    """A run's pick (a best_genome dict) with its own adapter on `fresh` fresh seeds at k."""
    genome, adapter = trained_adapter(run, best["genome_id"], bench.home)
    scores = [bench.answers(adapter, genome.knobs, fresh_seed(seed, i), k) for i in range(fresh)]
    genes = genome.genes
    return {"run": run, "seed": seed, "recorded_fitness": best["fitness"],
            "evaluations": best["evaluations"], "best": genome.id,
            "genes": f"{genes.adapter_type} r{genes.rank} a{genes.alpha} {'+'.join(genes.target_modules)}",
            "knobs": genome.knobs.model_dump(), **fresh_means(scores)}


def final_rounds_effect(results: list[dict[str, Any]]) -> None:
    """The final pick against the pick before the final rounds, paired by run: fresh fixed@k, and
    how far each pick's recorded fitness overstates its fresh one (the winner's curse)."""
    pairs = [(r, r["before_final_rounds"]) for r in results if "before_final_rounds" in r]
    if not pairs:
        return
    changed = [(r, b) for r, b in pairs if r["best"] != b["best"]]
    mean, se = mean_se([r["fresh_fixed_at_k"] - b["fresh_fixed_at_k"] for r, b in pairs])
    print(f"final rounds: the pick changed in {len(changed)} of {len(pairs)} runs; fresh fixed@k final "
          f"minus before {mean:+.3f} ± {se:.3f} over runs")
    if changed:
        after = mean_se([r["recorded_fitness"] - r["fresh_fitness"] for r, _ in changed])
        before = mean_se([b["recorded_fitness"] - b["fresh_fitness"] for _, b in changed])
        print(f"  where it changed, recorded minus fresh fitness: final pick {after[0]:+.3f} ± {after[1]:.3f}, "
              f"pick before {before[0]:+.3f} ± {before[1]:.3f}")


def withheld_instances(bench: Bench) -> set[str]:
    """Names of the evaluated instances whose bug class the base model's build withheld."""
    from coral.model.tiny import withheld_classes
    from coral.run.evaluate import instances_of

    classes = withheld_classes(bench.config.model.name)
    return instances_of(bench.config.benchmark.root, classes) if classes else set()


def print_table(rows: dict[str, list[dict[str, Any]]], heading: str) -> None:
    """Per strategy, mean ± SE over run seeds; then the paired differences that decide."""
    print(f"\n{heading}")
    print(" | ".join(("strategy", "recorded fitness", "fresh fixed@k", "fresh bugfix", "fresh fitness",
                      "fresh syntax")))
    for name, results in rows.items():
        if not results:
            continue
        cells = [mean_se([r[key] for r in results]) for key in (
            "recorded_fitness", "fresh_fixed_at_k", "fresh_bugfix", "fresh_fitness", "fresh_syntax")]
        print(" | ".join([name] + [f"{m:.3f} ± {s:.3f}" for m, s in cells]))
    for other in ("no-adapter", "random"):
        if not rows[other] or len(rows[other]) != len(rows["evolution"]):
            continue
        pairs = list(zip(rows["evolution"], rows[other], strict=True))
        diffs = [e["fresh_fixed_at_k"] - o["fresh_fixed_at_k"] for e, o in pairs]
        mean, se = mean_se(diffs)
        # the same difference paired by instance as well (instances x seeds), a finer SE
        per = [a - b for e, o in pairs for a, b in zip(e["solved"], o["solved"], strict=True)]
        pmean, pse = mean_se(per)
        z = f"{mean / se:.1f} SE" if se > 0 else "SE 0"
        pz = f"{pmean / pse:.1f} SE" if pse > 0 else "SE 0"
        print(f"evolution - {other}, fresh fixed@k: {mean:+.3f} ± {se:.3f} over seeds ({z}); "
              f"paired over instances x seeds {pmean:+.3f} ± {pse:.3f} ({pz})")
    print("best genomes: " + "; ".join(f"{r['best']} {r['genes']}" for r in rows["evolution"]))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CoralError as exc:  # a config, benchmark or store problem: its one line, not a traceback
        sys.exit(f"evolution_signal: {exc}")
