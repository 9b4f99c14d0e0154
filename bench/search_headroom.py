"""How much could any search gain over random search in configs/local.yaml's space?

The whole space, computed: every heavy-gene setting's adapter, and for any knobs the fix_chance
(coral.model.likelihood) on the search instances (what selection sees) and on every held-out
instance (what a pick's fresh fixed@5 estimates, with sampling noise). The landscape is printed
over a grid of knobs; then the engine's selection loop (bench/evolution_signal.py's
`selection_loop`: coral.evolution.selection.Evolution, survivors evaluated again, NSGA-II,
breeding) runs on it for many run seeds, evolution against random search, with the config's
budget. fix_chance is deterministic, so a simulated run selects exactly what a real run of the
model-only config selects (bench/RESULTS.md, "Search headroom", compares one).

    python -P bench/search_headroom.py --home H --cache C          # adapters missing from H are trained there
    python -P bench/search_headroom.py --home H --cache C --runs 400 --set evolution.tournament_size=3
    python -P bench/search_headroom.py --home H --cache C --first-run 200 \
        --variant evolution.mutation_rate=0.5 --variant evolution.crossover_rate=0.7,evolution.tournament_size=4

`--variant` simulates evolution again with other settings on the same run seeds and prints each
against random search and against the config, paired by run seed; `--first-run` moves the seeds
(a setting chosen as the best of several on seeds 0-199 is confirmed on 200-399).

One forward pass per adapter keeps, at every reference-answer token, the largest logits (as many
as top_k can keep) and the reference token's place among them; the knobs are then applied in
closed form, as transformers' temperature, top-k and top-p warpers do
(tests/evolution/test_search_headroom_bench.py holds it to coral.model.likelihood; the script
prints the difference for random genomes too). The repetition penalty reads the tokens before
each step and has no closed form here: the config must fix it at 1.0. Prints the landscape, the
simulated runs and what the real protocol (bench/evolution_signal.py: 3 run seeds, 2 fresh
sampling seeds at k=5) can detect.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evolution_signal import best_survivor, selection_loop

from coral.benchmark.loader import load_benchmark
from coral.benchmark.prompts import build_prompt, build_target
from coral.benchmark.split import load_split, split_for_config
from coral.config import Config, load_config
from coral.errors import CoralError
from coral.evolution.genome import Genome, HeavyGenes, Knobs
from coral.evolution.selection import CANDIDATE_OBJECTIVES
from coral.hashing import content_hash
from coral.home import Home
from coral.run.evaluate import default_knobs, mean_se

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "local.yaml"


def knob_axes(config: Config) -> tuple[list[float], list[int], list[float]]:
    """The grid's knots: temperature every 0.1 (ends included), 10 top_k, 5 top_p over the ranges."""
    k = config.knobs
    steps = max(2, round((k.temperature[1] - k.temperature[0]) / 0.1) + 1)
    temps = sorted({round(t, 6) for t in np.linspace(*k.temperature, steps)})
    top_ks = sorted({int(round(v)) for v in np.linspace(*k.top_k, 10)})
    top_ps = sorted({round(p, 6) for p in np.linspace(*k.top_p, 5)})
    return temps, top_ks, top_ps


@dataclass(frozen=True)
class TopLogits:
    """What the knobs can reach of one model's answers: per reference-answer token (a row), the
    largest `width` logits in descending order and the reference token's place among them (width
    when it is not among them: every top-k up to width cuts it), and the instance each row is of.
    Top-k keeps at most `width` tokens, so nothing below them can change a chance."""

    top: torch.Tensor  # [rows, width] float64, descending
    rank: torch.Tensor  # [rows]
    owner: torch.Tensor  # [rows], index of the instance
    instances: int  # rows of an instance not scored (it does not fit) are absent: chance 0

    def save(self, path: Path) -> None:
        np.savez(path, top=self.top.float().numpy(), rank=self.rank.numpy(), owner=self.owner.numpy(),
                 instances=self.instances)

    @classmethod
    def load(cls, path: Path) -> TopLogits:
        data = np.load(path)
        return cls(torch.from_numpy(data["top"]).double(), torch.from_numpy(data["rank"]),
                   torch.from_numpy(data["owner"]), int(data["instances"]))


def top_logits(model: Any, encoded: list[tuple[list[int], int, int]], width: int) -> TopLogits:
    """One forward pass per instance (prompt + reference answer, as coral.model.likelihood scores it)."""
    tops, ranks, owners = [], [], []
    with torch.inference_mode():
        for i, (ids, n_prompt, n_answer) in enumerate(encoded):
            if n_answer == 0:
                continue
            logits = model(input_ids=torch.tensor([ids]), logits_to_keep=n_answer + 1).logits[0, :-1]
            ordered, order = torch.sort(logits, dim=-1, descending=True)  # float32, as sampling sees them
            target = torch.tensor(ids[n_prompt:n_prompt + n_answer])
            hit = order[:, :width] == target[:, None]
            ranks.append(torch.where(hit.any(-1), hit.int().argmax(-1), width))
            tops.append(ordered[:, :width].double())
            owners.append(torch.full((n_answer,), i))
    if not tops:
        empty = torch.zeros((0, width), dtype=torch.float64)
        return TopLogits(empty, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), len(encoded))
    return TopLogits(torch.cat(tops), torch.cat(ranks), torch.cat(owners), len(encoded))


def logprobs(rows: TopLogits, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """log P(one answer sampled at these knobs is the reference) per instance; -inf where a knob
    cuts a reference token or the instance is not scored.

    Closed form of transformers' warpers in generate's order: temperature divides the logits;
    top-k keeps the k largest; top-p (on the top-k distribution) drops, from the least likely up,
    tokens whose cumulative probability stays at or below 1 - top_p, keeping at least one. In
    descending order the kept tokens are a prefix: token j is kept when the top-k probability of
    the tokens above it, C[j-1], is below top_p."""
    out = np.full(rows.instances, -np.inf)
    if len(rows.rank) == 0:
        return out
    k = min(top_k, rows.top.shape[1])
    probs = torch.softmax(rows.top[:, :k] / temperature, dim=-1)  # the top-k distribution
    cum = torch.cumsum(probs, dim=-1)
    rank = torch.clamp(rows.rank, max=k - 1)
    ok = rows.rank < k
    if top_p < 1.0:
        last = torch.searchsorted(cum[:, : k - 1].contiguous(), torch.full((len(rank), 1), top_p, dtype=cum.dtype))
        last = last[:, 0]
        kept = cum[torch.arange(len(rank)), torch.clamp(last, max=k - 1)]
        ok &= rows.rank <= last
    else:
        kept = cum[:, -1]
    target = probs[torch.arange(len(rank)), rank]
    step = torch.where(ok, torch.log(target) - torch.log(kept), -math.inf)
    total = torch.zeros(rows.instances, dtype=torch.float64).index_add_(0, rows.owner, step)
    scored = torch.zeros(rows.instances, dtype=torch.bool)
    scored[rows.owner] = True
    return np.where(scored.numpy(), total.numpy(), -np.inf)


def grid_logprobs(rows: TopLogits, temps: list[float], top_ks: list[int], top_ps: list[float]) -> np.ndarray:
    """`logprobs` per instance x temperature x top_k x top_p."""
    return np.stack([np.stack([np.stack([logprobs(rows, t, k, p) for p in top_ps], -1) for k in top_ks], -2)
                     for t in temps], -3)


def chance(logprob: np.ndarray, k: int) -> np.ndarray:
    """1 - (1 - p)^k elementwise, 0 where log p is -inf (coral.model.likelihood.chance_within)."""
    p = np.exp(logprob)
    return np.where(p >= 1.0, 1.0, -np.expm1(k * np.log1p(-np.minimum(p, 1 - 1e-16))))


class Landscape:
    """fix_chance of every (heavy genes, knobs) cell, on the search and the held-out instances."""

    def __init__(self, config: Config, home: Home, cache: Path | None = None) -> None:
        from coral.model.adapters import adapter_cache_key, data_fingerprint
        from coral.model.generate import merged_adapter
        from coral.model.likelihood import answer_tokens
        from coral.model.loading import load_base_model
        from coral.model.train import adapter_data, train_adapter

        if config.knobs.repetition_penalty != (1.0, 1.0) or config.knobs.top_k[0] < 1:
            raise SystemExit("knobs: the closed form here needs repetition_penalty [1.0, 1.0] and top_k of at least 1")
        problems = {p.name: p for p in load_benchmark(config.benchmark.root)}
        split = split_for_config(config)
        held = load_split(config.benchmark.root).eval
        missing = set(split.eval) - set(held)
        if missing:
            raise SystemExit(f"search instances outside the held-out split: {sorted(missing)[:3]}")
        base = load_base_model(config.model)
        pairs = adapter_data(config.training, config.benchmark.root, [problems[n] for n in split.train],
                             config.benchmark.prompt_style)
        fingerprint = data_fingerprint(pairs)
        self.config = config
        self.in_search = np.array([n in set(split.eval) for n in held])
        self.temps, self.top_ks, self.top_ps = knob_axes(config)
        self.max_new = list(config.knobs.max_new_tokens)
        prompts = [build_prompt(n, problems[n].buggy_source, config.benchmark.prompt_style) for n in held]
        refs = [build_target(problems[n].buggy_source, problems[n].correct_source) for n in held]
        longest = config.generation.max_prompt_length + max(self.max_new)
        encoded = [answer_tokens(base, p, r, longest) for p, r in zip(prompts, refs, strict=True)]
        # an answer fits a max_new_tokens setting when it is no longer and prompt + answer fit the limit
        self.fits = np.array([[0 < n <= m and len(ids) <= config.generation.max_prompt_length + m
                               for ids, _, n in encoded] for m in self.max_new])
        self.base, self.prompts, self.refs = base, prompts, refs
        g = config.genes
        self.genes = [HeavyGenes(rank=r, alpha=a, dropout=d, target_modules=tuple(m), adapter_type=t)
                      for t, r, a, d, m in itertools.product(g.adapter_types, g.ranks, g.alphas, sorted(g.dropout),
                                                             g.target_modules)]
        self.adapters: dict[tuple, Path | None] = {}
        self.trained = self.cached = 0
        self.rows: dict[tuple, TopLogits] = {}
        self.grids: list[np.ndarray] = []
        width = config.knobs.top_k[1]
        # A cached entry is its adapter's (or the base's) logits on these instances.
        spec = content_hash({"instances": held, "prompts": prompts, "references": refs, "longest": longest,
                             "width": width})
        for genes in [None, *self.genes]:
            adapter, name = None, f"base-{base.fingerprint}"
            if genes is not None:
                name = adapter_cache_key(genes, base.fingerprint, fingerprint, config.training)
                adapter = home.adapter_dir(name)
                if not (adapter / "coral_adapter.json").is_file():
                    train_adapter(base, genes, pairs, config.training, home, name)
                    self.trained += 1
            stored = cache / f"{name}-{spec}.npz" if cache else None
            if stored and stored.is_file():
                rows = TopLogits.load(stored)
                self.cached += 1
            else:
                with base.lock, merged_adapter(base, adapter):
                    rows = top_logits(base.model, encoded, width)
                if stored:
                    rows.save(stored)
            self.rows[self.key(genes)] = rows
            self.adapters[self.key(genes)] = adapter

    @staticmethod
    def key(genes: HeavyGenes | None) -> tuple:
        return () if genes is None else (genes.rank, genes.alpha, genes.dropout, tuple(genes.target_modules),
                                         genes.adapter_type)

    def table(self, where: str) -> np.ndarray:
        """Mean fix_chance on the grid: [adapter (None first, then self.genes), max_new_tokens option,
        temperature, top_k, top_p]."""
        mask = self.in_search if where == "search" else np.ones_like(self.in_search)
        k = self.config.objectives.fix_chance_k
        if not self.grids:  # per instance, computed once for both tables
            self.grids = [chance(grid_logprobs(self.rows[self.key(g)], self.temps, self.top_ks, self.top_ps), k)
                          for g in [None, *self.genes]]
        return np.stack([np.stack([(grid * fits[:, None, None, None])[mask].mean(0) for fits in self.fits])
                         for grid in self.grids])

    def per_instance(self, genes: HeavyGenes | None, knobs: Knobs) -> np.ndarray:
        """Each held-out instance's fix_chance at these genes and knobs, exactly."""
        lp = logprobs(self.rows[self.key(genes)], knobs.temperature, knobs.top_k, knobs.top_p)
        fits = self.fits[self.max_new.index(knobs.max_new_tokens)]
        return chance(lp, self.config.objectives.fix_chance_k) * fits

    def value(self, genes: HeavyGenes | None, knobs: Knobs, where: str) -> float:
        values = self.per_instance(genes, knobs)
        return float(values[self.in_search].mean() if where == "search" else values.mean())

    def exact(self, genes: HeavyGenes | None, knobs: Knobs, where: str) -> float:
        """The same number from coral.model.likelihood.fix_chances (a forward pass with the adapter)."""
        from coral.model.likelihood import fix_chances

        mask = self.in_search if where == "search" else np.ones_like(self.in_search)
        prompts = [p for p, m in zip(self.prompts, mask, strict=True) if m]
        refs = [r for r, m in zip(self.refs, mask, strict=True) if m]
        values = fix_chances(self.base, self.adapters[self.key(genes)], prompts, refs, knobs,
                             self.config.generation, self.config.objectives.fix_chance_k)
        return sum(values) / len(values)


def simulate(land: Landscape, config: Config, strategy: str, seed: int) -> dict[str, Any]:
    """One run of the engine's selection loop with the table as its evaluation."""
    run = config.model_copy(update={"seed": seed, "strategy": strategy})
    distinct: set[str] = set()

    def evaluate(genome: Genome, _seed: int) -> dict[str, float]:
        distinct.add(genome.id)
        return {**dict.fromkeys(CANDIDATE_OBJECTIVES, 0.0),
                "fix_chance": land.value(genome.genes, genome.knobs, "search")}

    evo, evaluations = selection_loop(run, evaluate)
    best = best_survivor(evo, run)
    return {"search": best.objectives["fix_chance"],
            "held_out": land.value(best.genome.genes, best.genome.knobs, "held"),
            "evaluations": evaluations, "distinct": len(distinct), "genome": best.genome}


def variant_overrides(text: str) -> list[str]:
    """`KEY=VALUE,KEY=VALUE` as `--set` items; each is checked by load_config with the config."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items or any("=" not in item for item in items):
        raise SystemExit(f"--variant {text!r}: expected KEY=VALUE[,KEY=VALUE...], "
                         f"e.g. evolution.mutation_rate=0.5,evolution.tournament_size=4")
    return items


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--home", type=Path, required=True,
                        help="CORAL_HOME whose adapter cache holds (or receives) the adapters")
    parser.add_argument("--cache", type=Path, default=None,
                        help="a folder keeping each adapter's table of log-probabilities between invocations")
    parser.add_argument("--runs", type=int, default=200, help="simulated run seeds per strategy")
    parser.add_argument("--first-run", type=int, default=0, help="the first simulated run seed")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="other evolution settings simulated on the same run seeds (repeatable)")
    parser.add_argument("--check", type=int, default=8, help="random genomes checked against the exact computation")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    config = load_config(args.config, args.set)
    variants = {text: load_config(args.config, args.set + variant_overrides(text)) for text in args.variant}
    seeds = range(args.first_run, args.first_run + args.runs)
    land = Landscape(config, Home(args.home).ensure(), args.cache)
    search, held = land.table("search"), land.table("held")
    names = ["no adapter"] + [f"{g.adapter_type} r{g.rank} a{g.alpha} d{g.dropout} {'+'.join(g.target_modules)}"
                              for g in land.genes]
    print(f"{len(land.genes)} heavy-gene settings ({land.trained} trained now, {land.cached} tables from the cache) "
          f"x {held[0].size} knob cells; "
          f"{int(land.in_search.sum())} search and {len(land.in_search)} held-out instances; "
          f"fix_chance k={config.objectives.fix_chance_k}; {time.time() - started:.0f} s")

    def where(i: tuple) -> str:
        return (f"{names[i[0]]}, max_new_tokens {land.max_new[i[1]]}, T {land.temps[i[2]]}, top_k "
                f"{land.top_ks[i[3]]}, top_p {land.top_ps[i[4]]}")

    cells = held[1:]
    print(f"held-out fix_chance over every adapter cell: quantiles 0/10/50/90/100 % "
          f"{' / '.join(f'{q:.4f}' for q in np.quantile(cells, [0, .1, .5, .9, 1]))}")
    knobs = default_knobs(config.knobs)
    print(f"no adapter: {land.value(None, knobs, 'held'):.4f} at the default knobs, "
          f"best over the knobs {held[0].max():.4f}")
    flat = cells.reshape(len(cells), -1)
    total = flat.var()
    print(f"variance of held-out fix_chance: adapters {flat.mean(1).var() / total:.2f}, knobs "
          f"{flat.mean(0).var() / total:.2f}, interaction {1 - (flat.mean(1).var() + flat.mean(0).var()) / total:.2f}")
    top = np.unravel_index(held.argmax(), held.shape)
    print(f"best cell on held-out: {held[top]:.4f} ({where(top)})")
    top = np.unravel_index(search[1:].argmax(), search[1:].shape)
    top = (top[0] + 1, *top[1:])
    print(f"best cell on the search instances: {search[top]:.4f} there, {held[top]:.4f} on held-out ({where(top)})")
    print(f"search vs held-out over the cells: r = {np.corrcoef(search[1:].ravel(), cells.ravel())[0, 1]:.3f}")

    rng = np.random.default_rng(0)
    errors = []
    for _ in range(args.check):
        genes = land.genes[int(rng.integers(len(land.genes)))]
        k = config.knobs
        probe = Knobs(temperature=round(float(rng.uniform(*k.temperature)), 6),
                      top_p=round(float(rng.uniform(*k.top_p)), 6),
                      top_k=int(rng.integers(k.top_k[0], k.top_k[1] + 1)), repetition_penalty=1.0,
                      max_new_tokens=int(rng.choice(k.max_new_tokens)))
        errors.append(land.value(genes, probe, "search") - land.exact(genes, probe, "search"))
    if errors:
        print(f"closed form minus coral.model.likelihood's fix_chance ({len(errors)} random genomes, search "
              f"instances): "
              f"median |error| {np.median(np.abs(errors)):.5f}, max {np.max(np.abs(errors)):.5f}")

    results = {s: [simulate(land, config, s, seed) for seed in seeds] for s in ("evolution", "random")}
    print(f"\nsimulated runs: {args.runs} seeds per strategy (run seeds {seeds.start}-{seeds.stop - 1}), "
          f"population {config.population} x {config.generations} "
          f"generations, final_rounds {config.evolution.final_rounds}")
    print("strategy | evaluations | distinct genomes | pick's fix_chance, search | pick's fix_chance, held-out")
    for s, rs in results.items():
        sm, ss = mean_se([r["search"] for r in rs])
        hm, hs = mean_se([r["held_out"] for r in rs])
        print(f"{s} | {np.mean([r['evaluations'] for r in rs]):.0f} | {np.mean([r['distinct'] for r in rs]):.1f} | "
              f"{sm:.4f} ± {ss:.4f} | {hm:.4f} ± {hs:.4f} (SD {np.std([r['held_out'] for r in rs]):.4f})")
    for s, rs in results.items():  # to compare with a real run of the same seed (coral run --set seed=S)
        print(f"  {s}, run seed {seeds.start}: picks {rs[0]['genome'].id} at fix_chance {rs[0]['search']:.7f}")
    diff = [e["held_out"] - r["held_out"] for e, r in zip(results["evolution"], results["random"], strict=True)]
    dm, ds = mean_se(diff)
    none = land.value(None, knobs, "held")
    print(f"evolution - random, held-out fix_chance: {dm:+.4f} ± {ds:.4f} over {args.runs} seeds; "
          f"evolution - no adapter {np.mean([r['held_out'] for r in results['evolution']]) - none:+.4f}")

    # What bench/evolution_signal.py's protocol can see: 3 run seeds, 2 fresh seeds of 5 answers on
    # every held-out instance. Per run, fixed@5's sampling variance is sum_i f(1-f) / (2 n^2).
    n = len(land.in_search)
    sampling = np.mean([float(np.sum(v * (1 - v))) / (2 * n * n) for r in results["evolution"]
                        for v in [land.per_instance(r["genome"].genes, r["genome"].knobs)]])
    spread = np.var([r["held_out"] for r in results["evolution"]]) + np.var([r["held_out"] for r in results["random"]])
    se3 = math.sqrt((spread + 2 * sampling) / 3)
    print(f"the real protocol (3 run seeds, 2 fresh seeds at k=5): SE of evolution - random about {se3:.4f}, "
          f"so the expected difference above is {dm / se3:.1f} SE; 2 SE needs a difference of {2 * se3:.4f}")
    if dm > 0:
        print(f"  at this difference 2 SE takes about {math.ceil(3 * (2 * se3 / dm) ** 2)} run seeds")
    # A search that always found the best held-out cell: no spread of its own, random's spread.
    ceiling = float(held[1:].max() - np.mean([r["held_out"] for r in results["random"]]))
    perfect = math.sqrt((np.var([r["held_out"] for r in results["random"]]) + 2 * sampling) / 3)
    print(f"a search that always found the best held-out cell: {ceiling:+.4f}, {ceiling / perfect:.1f} SE in the real "
          f"protocol")
    held_of = {name: np.array([r["held_out"] for r in rs]) for name, rs in results.items()}
    for text, variant in variants.items():
        runs = [simulate(land, variant, "evolution", seed) for seed in seeds]
        held_v = np.array([r["held_out"] for r in runs])
        vs_random, vs_config = mean_se(list(held_v - held_of["random"])), mean_se(list(held_v - held_of["evolution"]))
        print(f"variant {text}: pick's fix_chance search {np.mean([r['search'] for r in runs]):.4f}, held-out "
              f"{held_v.mean():.4f}; - random {vs_random[0]:+.4f} ± {vs_random[1]:.4f}; - the config "
              f"{vs_config[0]:+.4f} ± {vs_config[1]:.4f} (paired by run seed)")
    print(f"wall {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CoralError as exc:  # a bad --set / --variant or config: its one line, not a traceback
        sys.exit(f"search_headroom: {exc}")
