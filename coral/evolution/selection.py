"""One generation step: weighted fitness, threshold gate, NSGA-II survivors, breeding.

`Evolution` is pure: given the evaluated genomes of generation g it returns the population of
generation g+1, drawing every random number from streams keyed by (seed, generation, purpose).
Its state (the survivors) is plain JSON, so a checkpoint can restore it exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from coral.config import Config, GateConfig, ObjectiveWeights
from coral.evolution import nsga2, operators
from coral.evolution.genome import Genome
from coral.rng import stream

# The objective set, declared once: the fields of the config's objective weights, in their order.
# Job outputs, events, the store's columns and the figures all follow it (docs/objectives.md).
OBJECTIVES: tuple[str, ...] = tuple(ObjectiveWeights.model_fields)
# Computed by the generate job from the model's own probabilities, one value per eval problem;
# every other objective is computed per candidate by the test job (coral.sandbox.objectives).
MODEL_OBJECTIVES: tuple[str, ...] = ("fix_chance",)
CANDIDATE_OBJECTIVES: tuple[str, ...] = tuple(n for n in OBJECTIVES if n not in MODEL_OBJECTIVES)


@dataclass(frozen=True)
class Scored:
    genome: Genome
    objectives: dict[str, float]

    def vector(self, names: tuple[str, ...] = OBJECTIVES) -> np.ndarray:
        return np.array([self.objectives[name] for name in names], dtype=float)

    def to_json(self) -> dict[str, Any]:
        return {"genome": self.genome.model_dump(mode="json"), "objectives": self.objectives}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scored:
        return cls(Genome.model_validate(data["genome"]), dict(data["objectives"]))


def selection_objectives(weights: ObjectiveWeights) -> tuple[str, ...]:
    """The objectives NSGA-II ranks on: those with a positive weight. Weight 0 retires an
    objective from selection (docs/objectives.md); it is still scored, stored and plotted."""
    w = weights.model_dump()
    return tuple(name for name in OBJECTIVES if w[name] > 0)


def weighted_fitness(objectives: dict[str, float], weights: ObjectiveWeights) -> float:
    w = weights.model_dump()
    return sum(w[name] * objectives[name] for name in OBJECTIVES) / sum(w.values())


def gate_threshold(gate: GateConfig, generation: int, generations: int) -> float:
    """The minimum weighted fitness a genome needs to survive selection at this generation."""
    if gate.schedule == "none":
        return 0.0
    t = 1.0 if generations <= 1 else min(1.0, generation / (generations - 1))
    if gate.schedule == "linear":
        s = t
    else:  # sigmoid, rescaled so that s(0) = 0 and s(1) = 1 exactly
        def sig(x: float) -> float:
            return 1.0 / (1.0 + math.exp(-gate.steepness * (x - 0.5)))

        s = (sig(t) - sig(0.0)) / (sig(1.0) - sig(0.0))
    return gate.start + (gate.end - gate.start) * s


def apply_gate(pool: list[Scored], config: Config, generation: int) -> tuple[list[Scored], float]:
    """Genomes at or above the threshold; the best few always pass (gate.min_survivors)."""
    threshold = gate_threshold(config.evolution.gate, generation, config.generations)
    weights = config.objectives.weights
    fitness = [weighted_fitness(s.objectives, weights) for s in pool]
    passed = [i for i, f in enumerate(fitness) if f >= threshold]
    if len(passed) < config.evolution.gate.min_survivors:
        by_fitness = sorted(range(len(pool)), key=lambda i: (-fitness[i], i))
        passed = sorted(set(passed) | set(by_fitness[: config.evolution.gate.min_survivors]))
    return [pool[i] for i in passed], threshold


def gene_distance_vector(genome: Genome, config: Config) -> list[tuple[str, float]]:
    """Each gene as ('ordinal'|'categorical', value in [0, 1]) for genotype distance."""
    g, k, genes, knobs = config.genes, config.knobs, genome.genes, genome.knobs

    def ordinal(options: list, value: Any) -> float:
        if value not in options or len(options) == 1:
            return 0.0
        return options.index(value) / (len(options) - 1)

    def span(rng: tuple[float, float], value: float) -> float:
        return 0.0 if rng[1] == rng[0] else (value - rng[0]) / (rng[1] - rng[0])

    modules = [list(m) for m in g.target_modules]
    return [
        ("o", ordinal(g.ranks, genes.rank)),
        ("o", ordinal(g.alphas, genes.alpha)),
        ("o", ordinal(sorted(g.dropout), genes.dropout)),
        ("c", float(modules.index(list(genes.target_modules))) if list(genes.target_modules)
         in modules else -1.0),
        ("c", float(genes.adapter_type == "dora")),
        ("o", span(k.temperature, knobs.temperature)),
        ("o", span(k.top_p, knobs.top_p)),
        ("o", span(k.top_k, knobs.top_k)),
        ("o", span(k.repetition_penalty, knobs.repetition_penalty)),
        ("o", ordinal(k.max_new_tokens, knobs.max_new_tokens)),
    ]


def genotype_diversity(genomes: list[Genome], config: Config) -> float:
    """Mean pairwise RMS distance of normalised gene vectors, in [0, 1]."""
    vectors = [gene_distance_vector(g, config) for g in genomes]
    if len(vectors) < 2:
        return 0.0
    total, pairs = 0.0, 0
    for i in range(len(vectors)):
        for j in range(i + 1, len(vectors)):
            sq = [
                (a - b) ** 2 if kind == "o" else float(a != b)
                for (kind, a), (_, b) in zip(vectors[i], vectors[j], strict=True)
            ]
            total += math.sqrt(sum(sq) / len(sq))
            pairs += 1
    return total / pairs


def phenotype_diversity(scored: list[Scored]) -> tuple[int, float]:
    """Distinct objective vectors: (count, count / population)."""
    if not scored:
        return 0, 0.0
    distinct = {tuple(round(s.objectives[n], 9) for n in OBJECTIVES) for s in scored}
    return len(distinct), len(distinct) / len(scored)


class Evolution:
    """Strategy-aware population stepping: evolution (NSGA-II), random, or grid."""

    def __init__(self, config: Config, survivors: list[Scored] | None = None,
                 evaluations: dict[str, dict[str, Any]] | None = None) -> None:
        self.config = config
        self.survivors: list[Scored] = list(survivors or [])
        # Noise control (docs/engine.md): genome id -> {"count": n, "sums": {metric: total}}
        # over its evaluations so far; kept for the survivors, which are evaluated again.
        self.evaluations: dict[str, dict[str, Any]] = dict(evaluations or {})

    def _rng(self, generation: int, purpose: str) -> np.random.Generator:
        return stream(self.config.seed, purpose, generation=generation)

    def initial_population(self) -> list[Genome]:
        return self._fresh(0)

    def _fresh(self, generation: int) -> list[Genome]:
        n, strategy = self.config.population, self.config.strategy
        rng = self._rng(generation, f"population:{strategy}")
        if strategy == "grid":
            points = operators.grid_points(self.config)
            chosen = [points[(generation * n + i) % len(points)] for i in range(n)]
            return _distinct([operators.grid_genome(self.config, p, rng) for p in chosen])
        make = operators.random_genome if strategy == "random" else operators.from_ca
        return _distinct([make(self.config, rng) for _ in range(n)])

    def fold(self, scores: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        """Fold each genome's new evaluation into the mean over all of its evaluations and
        return those means; survivors among them carry the new means into selection."""
        means: dict[str, dict[str, float]] = {}
        for genome_id, new in scores.items():
            entry = self.evaluations.get(genome_id, {"count": 0, "sums": {}})
            sums = {k: entry["sums"].get(k, 0.0) + float(v) for k, v in new.items()}
            count = entry["count"] + 1
            self.evaluations[genome_id] = {"count": count, "sums": sums}
            means[genome_id] = {k: v / count for k, v in sums.items()}
        self.survivors = [Scored(s.genome, {n: means[s.genome.id][n] for n in OBJECTIVES})
                          if s.genome.id in means else s for s in self.survivors]
        return means

    def count(self, genome_id: str) -> int:
        """How many evaluations a genome's scores average (0 if never folded)."""
        return int(self.evaluations.get(genome_id, {}).get("count", 0))

    def final_round(self, generation: int) -> bool:
        """Whether generation g is one of the last `evolution.final_rounds` (or past the run): it
        breeds and selects nothing, and only the survivors are evaluated again (docs/engine.md)."""
        return generation >= self.config.generations - self.config.evolution.final_rounds

    def select(self, generation: int, evaluated: list[Scored]) -> tuple[list[Scored], dict]:
        """Survivors of generation g from last survivors + this generation's evaluated genomes.

        In a final round nothing is selected: every survivor is kept to be evaluated again, with
        the means `fold` gave it; the gate, which pushes the search, would otherwise prune
        finalists on the very noise the rounds are there to average out."""
        if self.final_round(generation):
            return self.survivors, {"gate_threshold": None, "gated_out": 0, "pool": len(self.survivors),
                                    "survivors": len(self.survivors)}
        pool = _dedupe(self.survivors + evaluated)
        gated, threshold = apply_gate(pool, self.config, generation)
        names = selection_objectives(self.config.objectives.weights)
        objectives = np.array([s.vector(names) for s in gated])
        keep = nsga2.select_survivors(objectives, min(self.config.population, len(gated)))
        self.survivors = [gated[i] for i in keep]
        kept = {s.genome.id for s in self.survivors}
        # Only survivors are evaluated again; the others' running sums are of no further use.
        self.evaluations = {k: v for k, v in self.evaluations.items() if k in kept}
        info = {"gate_threshold": threshold, "gated_out": len(pool) - len(gated),
                "pool": len(pool), "survivors": len(self.survivors)}
        return self.survivors, info

    def breed(self, generation: int) -> list[Genome]:
        """The population of generation + 1."""
        if self.config.strategy != "evolution":
            return self._fresh(generation + 1)
        evo = self.config.evolution
        parents = self.survivors
        names = selection_objectives(self.config.objectives.weights)
        rank, crowd = nsga2.rank_and_crowding(np.array([s.vector(names) for s in parents]))
        rng = self._rng(generation + 1, "breed")
        seen = {s.genome.id for s in parents}
        children: list[Genome] = []
        attempts = 0
        while len(children) < self.config.population and attempts < 20 * self.config.population:
            attempts += 1
            a = parents[nsga2.tournament(rank, crowd, rng, evo.tournament_size)].genome
            crossed = len(parents) > 1 and rng.random() < evo.crossover_rate
            if crossed:
                b = parents[nsga2.tournament(rank, crowd, rng, evo.tournament_size)].genome
                child = operators.crossover(a, b, self.config, rng)
            else:
                child = a
            if child.id in seen or rng.random() < evo.mutation_rate:
                if rng.random() < evo.ca_mutation_share:
                    child = operators.mutate_ca(child, self.config, rng)
                else:
                    child = operators.mutate_gene(child, self.config, rng)
                if crossed:
                    # The crossover product was never evaluated: the child's parents are the two
                    # survivors it was bred from, and its origin says both steps.
                    child = child.model_copy(update={"parents": _distinct_ids((a.id, b.id)),
                                                     "origin": f"crossover+{child.origin}"})
            if child.id in seen:
                continue
            seen.add(child.id)
            children.append(child)
        return children

    def state(self) -> dict[str, Any]:
        return {"survivors": [s.to_json() for s in self.survivors],
                "evaluations": {k: self.evaluations[k] for k in sorted(self.evaluations)}}

    @classmethod
    def from_state(cls, config: Config, state: dict[str, Any]) -> Evolution:
        return cls(config, [Scored.from_json(s) for s in state["survivors"]],
                   state.get("evaluations") or {})


def _dedupe(scored: list[Scored]) -> list[Scored]:
    seen: set[str] = set()
    out = []
    for s in scored:
        if s.genome.id not in seen:
            seen.add(s.genome.id)
            out.append(s)
    return out


def _distinct_ids(ids: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ids))


def _distinct(genomes: list[Genome]) -> list[Genome]:
    out: dict[str, Genome] = {}
    for g in genomes:
        out.setdefault(g.id, g)
    return list(out.values())
