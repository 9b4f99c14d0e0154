"""Genome construction and variation: derive, random, grid, CA/gene mutation, crossover.

Every function takes an explicit numpy Generator from coral.rng; none touches a global RNG.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from coral.config import Config
from coral.evolution import ca, mapping
from coral.evolution.genome import HEAVY_GENES, KNOBS, CASeed, Genome, HeavyGenes, Knobs


def derive(
    seed: CASeed,
    config: Config,
    overrides: dict[str, Any] | None = None,
    parents: tuple[str, ...] = (),
    origin: str = "ca",
) -> Genome:
    """Genes from the CA's behaviour, then the recorded gene-level overrides on top."""
    features = ca.features(seed)
    genes = mapping.heavy_genes(features, config.genes).model_dump()
    knobs = mapping.knobs(features, config.knobs).model_dump()
    overrides = dict(sorted((overrides or {}).items()))
    for name, value in overrides.items():
        (genes if name in HEAVY_GENES else knobs)[name] = value
    return Genome(
        seed=seed,
        genes=HeavyGenes(**genes),
        knobs=Knobs(**knobs),
        overrides=overrides,
        parents=parents,
        origin=origin,
    )


def random_ca_seed(config: Config, rng: np.random.Generator) -> CASeed:
    return ca.random_seed(rng, config.ca.width, config.ca.height, config.ca.steps, config.ca.density)


def from_ca(config: Config, rng: np.random.Generator) -> Genome:
    return derive(random_ca_seed(config, rng), config)


def random_gene_value(name: str, config: Config, rng: np.random.Generator) -> Any:
    g, k = config.genes, config.knobs
    choices: dict[str, list] = {
        "rank": g.ranks,
        "alpha": g.alphas,
        "target_modules": [list(m) for m in g.target_modules],
        "adapter_type": list(g.adapter_types),
        "dropout": sorted(g.dropout),
        "max_new_tokens": k.max_new_tokens,
    }
    if name in choices:
        return choices[name][int(rng.integers(len(choices[name])))]
    if name == "top_k":
        return int(rng.integers(k.top_k[0], k.top_k[1] + 1))
    low, high = {"temperature": k.temperature, "top_p": k.top_p,
                 "repetition_penalty": k.repetition_penalty}[name]
    return round(float(rng.uniform(low, high)), 6)


def random_genome(config: Config, rng: np.random.Generator) -> Genome:
    """The `random` baseline: every gene drawn directly, the CA seed kept only as a record."""
    seed = random_ca_seed(config, rng)
    overrides = {name: random_gene_value(name, config, rng) for name in HEAVY_GENES + KNOBS}
    return derive(seed, config, overrides, origin="random")


def grid_points(config: Config) -> list[dict[str, Any]]:
    """The `grid` baseline: every combination of the heavy-gene candidates, knobs at mid-range."""
    g, k = config.genes, config.knobs
    mid = {
        "dropout": sorted(g.dropout)[(len(g.dropout) - 1) // 2],  # the middle level
        "temperature": round(sum(k.temperature) / 2, 6),
        "top_p": round(sum(k.top_p) / 2, 6),
        "top_k": (k.top_k[0] + k.top_k[1]) // 2,
        "repetition_penalty": round(sum(k.repetition_penalty) / 2, 6),
        "max_new_tokens": k.max_new_tokens[len(k.max_new_tokens) // 2],
    }
    return [
        {"rank": r, "alpha": a, "target_modules": list(m), "adapter_type": t, **mid}
        for r, a, m, t in itertools.product(g.ranks, g.alphas, g.target_modules, g.adapter_types)
    ]


def grid_genome(config: Config, point: dict[str, Any], rng: np.random.Generator) -> Genome:
    return derive(random_ca_seed(config, rng), config, point, origin="grid")


def mutate_ca(genome: Genome, config: Config, rng: np.random.Generator) -> Genome:
    """Flip cells (at least one), sometimes a rule bit or the step count; genes re-derive."""
    seed = genome.seed
    cells = np.frombuffer(seed.cells.encode("ascii"), dtype=np.uint8) - ord("0")
    flips = rng.random(cells.size) < config.evolution.cell_flip_rate
    flips[int(rng.integers(cells.size))] = True
    cells = np.where(flips, 1 - cells, cells)
    birth, survive, steps = seed.birth, seed.survive, seed.steps
    if rng.random() < 0.3:
        if rng.random() < 0.5:
            birth ^= 1 << int(rng.integers(1, 9))  # bit 0 stays clear: no B0 rules
        else:
            survive ^= 1 << int(rng.integers(0, 9))
    if rng.random() < 0.2:
        low, high = config.ca.steps
        steps = int(np.clip(steps + int(rng.integers(-4, 5)), low, high))
    new_seed = seed.model_copy(
        update={"cells": "".join(map(str, cells)), "birth": birth, "survive": survive,
                "steps": steps}
    )
    return derive(new_seed, config, genome.overrides, (genome.id,), "mutation:ca")


def mutate_gene(genome: Genome, config: Config, rng: np.random.Generator) -> Genome:
    """Change exactly one gene directly and record it; every other gene stays as it was."""
    names = HEAVY_GENES + KNOBS
    current = genome.gene_vector()
    name = names[int(rng.integers(len(names)))]
    for _ in range(8):  # draw until the value actually changes (lists may hold one candidate)
        value = random_gene_value(name, config, rng)
        if _normal(value) != _normal(current[name]):
            break
    # The seed is unchanged, so every other gene re-derives to the value it had.
    overrides = {**genome.overrides, name: value}
    return derive(genome.seed, config, overrides, (genome.id,), f"mutation:gene:{name}")


def crossover(a: Genome, b: Genome, config: Config, rng: np.random.Generator) -> Genome:
    """One-point crossover of the grids by rows; the rule and step count from one coin-chosen
    parent, as a unit.

    The rule decides the automaton's behaviour (and so the genes); a child whose birth mask came
    from one parent and survive mask from the other ran a third automaton, whose genes were as
    far from both parents' as a random genome's (docs/ca.md, "Heritability").

    A gene one parent set directly (an override) is inherited: from a coin-chosen parent when
    both set it, else from the one that did. Only un-overridden genes re-derive from the CA.
    """
    cut = int(rng.integers(1, a.seed.height)) * a.seed.width
    cells = a.seed.cells[:cut] + b.seed.cells[cut:]
    rule = (a if rng.random() < 0.5 else b).seed
    seed = a.seed.model_copy(update={"cells": cells, "birth": rule.birth, "survive": rule.survive,
                                      "steps": rule.steps})
    overrides: dict[str, Any] = {}
    for name in sorted(set(a.overrides) | set(b.overrides)):
        donor = a if rng.random() < 0.5 else b
        source = donor if name in donor.overrides else (b if donor is a else a)
        overrides[name] = source.overrides[name]
    return derive(seed, config, overrides, tuple(dict.fromkeys((a.id, b.id))), "crossover")


def _normal(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
