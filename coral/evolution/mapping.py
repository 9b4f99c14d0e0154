"""CA features -> heavy genes and cheap knobs, over the configured candidate lists and ranges.

Each gene reads a different blend of the four features, folded into [0, 1) with
frac(a*f1 + b*f2). Folding keeps the map a deterministic function of behaviour while spreading
skewed features (most rules are chaotic or die) over every candidate; the blend coefficients
are fixed constants, so a genome's genes never depend on the process or the run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

from coral.config import GeneSpace, KnobSpace
from coral.evolution.ca import CAFeatures
from coral.evolution.genome import HeavyGenes, Knobs

T = TypeVar("T")

# gene -> ((feature, coefficient), (feature, coefficient))
BLENDS: dict[str, tuple[tuple[str, float], tuple[str, float]]] = {
    "rank": (("complexity", 3.7), ("intensity", 1.3)),
    "alpha": (("intensity", 2.9), ("convergence", 1.7)),
    "dropout": (("periodicity", 5.3), ("complexity", 2.1)),
    "target_modules": (("convergence", 2.3), ("complexity", 3.1)),
    "adapter_type": (("intensity", 4.1), ("periodicity", 2.2)),
    "temperature": (("complexity", 1.9), ("convergence", 2.7)),
    "top_p": (("intensity", 3.3), ("complexity", 1.1)),
    "top_k": (("convergence", 3.9), ("intensity", 2.3)),
    "repetition_penalty": (("periodicity", 3.1), ("intensity", 1.9)),
    "max_new_tokens": (("complexity", 2.6), ("convergence", 1.4)),
}


def unit(features: CAFeatures, gene: str) -> float:
    (f1, a), (f2, b) = BLENDS[gene]
    value = a * getattr(features, f1) + b * getattr(features, f2)
    return value - math.floor(value)


def pick(options: Sequence[T], u: float) -> T:
    return options[min(len(options) - 1, int(u * len(options)))]


def scale(low: float, high: float, u: float) -> float:
    return round(low + (high - low) * u, 6)


def heavy_genes(features: CAFeatures, space: GeneSpace) -> HeavyGenes:
    return HeavyGenes(
        rank=pick(space.ranks, unit(features, "rank")),
        alpha=pick(space.alphas, unit(features, "alpha")),
        dropout=pick(sorted(space.dropout), unit(features, "dropout")),
        target_modules=tuple(pick(space.target_modules, unit(features, "target_modules"))),
        adapter_type=pick(space.adapter_types, unit(features, "adapter_type")),
    )


def knobs(features: CAFeatures, space: KnobSpace) -> Knobs:
    top_k_low, top_k_high = space.top_k
    return Knobs(
        temperature=scale(*space.temperature, unit(features, "temperature")),
        top_p=scale(*space.top_p, unit(features, "top_p")),
        top_k=int(round(top_k_low + (top_k_high - top_k_low) * unit(features, "top_k"))),
        repetition_penalty=scale(*space.repetition_penalty, unit(features, "repetition_penalty")),
        max_new_tokens=pick(space.max_new_tokens, unit(features, "max_new_tokens")),
    )
