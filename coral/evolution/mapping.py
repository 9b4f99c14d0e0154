"""CA features -> heavy genes and cheap knobs, over the configured candidate lists and ranges.

Each gene reads a different blend of the four features, a*f1 + b*f2, mapped into [0, 1] by
that blend's distribution function over random automata (BLEND_QUANTILES). The distribution
function spreads skewed features (most rules are chaotic or die) evenly over every candidate,
and it is continuous, so a small change of behaviour is a small change of every gene: a child
that behaves like its parent gets its parent's genes (docs/ca.md, "Heritability"). The blend
coefficients and the table are fixed constants, so a genome's genes never depend on the process
or the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from coral.config import CAConfig, GeneSpace, KnobSpace
from coral.evolution import ca
from coral.evolution.ca import CAFeatures
from coral.evolution.genome import HeavyGenes, Knobs
from coral.rng import stream

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


def blend(features: CAFeatures, gene: str) -> float:
    (f1, a), (f2, b) = BLENDS[gene]
    return a * getattr(features, f1) + b * getattr(features, f2)


def blend_quantiles(count: int = 2000, seed: int = 0, knots: int = 33) -> dict[str, tuple[float, ...]]:
    """How BLEND_QUANTILES was made: each blend's quantiles at `knots` even levels over `count`
    random seeds of the default automaton (CAConfig's defaults)."""
    defaults = CAConfig()
    rng = stream(seed, "mapping:quantiles")
    features = [ca.features(ca.random_seed(rng, defaults.width, defaults.height, defaults.steps,
                                           defaults.density)) for _ in range(count)]
    levels = np.linspace(0.0, 1.0, knots)
    return {gene: tuple(round(float(q), 6) for q in np.quantile([blend(f, gene) for f in features], levels))
            for gene in BLENDS}


def _distribution(quantiles: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Knots and levels of a piecewise-linear distribution function. A value that several
    quantiles share (automata that behave alike) is one knot at the mean of its levels."""
    levels = np.linspace(0.0, 1.0, len(quantiles))
    knots = np.unique(quantiles)
    return knots, np.array([levels[np.asarray(quantiles) == k].mean() for k in knots])


def unit_of_blend(gene: str, value: float) -> float:
    knots, levels = _DISTRIBUTIONS[gene]
    return float(np.interp(value, knots, levels))


def unit(features: CAFeatures, gene: str) -> float:
    return unit_of_blend(gene, blend(features, gene))


# Each blend's quantiles at 33 even levels over 2,000 random automata of the default CA config:
# blend_quantiles() made this table; tests/evolution/test_mapping.py holds it to that.
BLEND_QUANTILES: dict[str, tuple[float, ...]] = {
    "rank": (
        0.10478, 0.877344, 1.292904, 1.904634, 2.24768, 2.962558, 3.327768, 3.490794, 3.633364, 3.749907,
        3.820138, 3.883581, 3.932223, 3.983321, 4.024008, 4.049026, 4.080327, 4.10802, 4.132132, 4.154883,
        4.175609, 4.194029, 4.211587, 4.228343, 4.24804, 4.260385, 4.271152, 4.285257, 4.297535, 4.307287,
        4.316355, 4.325407, 4.344464
    ),
    "alpha": (
        0.621395, 0.891777, 1.001751, 1.09198, 1.153947, 1.206768, 1.247573, 1.30577, 1.347246, 1.394726,
        1.443469, 1.480703, 1.519113, 1.556517, 1.597642, 1.64166, 1.688536, 1.73278, 1.767893, 1.798977,
        1.839557, 1.875465, 1.909151, 1.957007, 2.017812, 2.064323, 2.159013, 2.2994, 2.599427, 3.03602,
        3.507243, 4.202873, 4.53693
    ),
    "dropout": (
        0.053764, 0.348167, 0.578992, 0.826614, 1.037138, 1.375527, 1.688403, 1.774623, 1.824545, 1.859693,
        1.892567, 1.921726, 1.939119, 1.957382, 1.976936, 1.991205, 2.005317, 2.017796, 2.027234, 2.036709,
        2.047318, 2.055036, 2.061269, 2.067852, 2.073747, 2.083663, 2.092063, 2.105856, 2.125032, 2.166723,
        2.383936, 6.34946, 7.357743
    ),
    "target_modules": (
        2.25039, 2.546097, 2.648406, 2.721718, 2.782743, 2.828007, 2.867279, 2.896925, 2.925603, 2.95181,
        2.967451, 2.988823, 3.003363, 3.018368, 3.031126, 3.04229, 3.053925, 3.065653, 3.081253, 3.095305,
        3.109843, 3.126974, 3.147281, 3.176293, 3.221563, 3.295057, 3.449969, 3.630977, 3.847187, 4.137956,
        4.542798, 4.954022, 5.325826
    ),
    "adapter_type": (
        0.031704, 0.199142, 0.338239, 0.538418, 1.048568, 1.210117, 1.336159, 1.430284, 1.532669, 1.618021,
        1.682708, 1.741158, 1.810689, 1.887675, 1.949977, 2.003536, 2.0583, 2.107137, 2.156078, 2.201054,
        2.261506, 2.326175, 2.385228, 2.443062, 2.527217, 2.592542, 2.657667, 2.772874, 2.906303, 3.108087,
        3.499507, 3.91432, 5.967676
    ),
    "temperature": (
        1.379271, 1.632761, 1.694007, 1.733588, 1.766045, 1.789038, 1.808333, 1.824977, 1.839735, 1.851556,
        1.860132, 1.867062, 1.875873, 1.88883, 1.903962, 1.918371, 1.931329, 1.948462, 1.970454, 1.995492,
        2.02696, 2.098699, 2.238481, 2.545601, 2.863977, 3.069875, 3.207632, 3.3209, 3.513938, 3.701785,
        3.947493, 4.315284, 4.547922
    ),
    "top_p": (
        0.05368, 0.409149, 0.624595, 0.957562, 1.602641, 1.842447, 1.98618, 2.105383, 2.192438, 2.300455,
        2.355271, 2.42344, 2.476262, 2.534812, 2.582206, 2.634409, 2.662887, 2.69712, 2.742326, 2.780249,
        2.812324, 2.851306, 2.888305, 2.931291, 2.975945, 3.014983, 3.060761, 3.101582, 3.15994, 3.223946,
        3.265832, 3.323296, 3.443628
    ),
    "top_k": (
        0.49283, 0.749182, 0.853116, 0.928497, 0.969627, 1.011688, 1.056095, 1.100864, 1.143758, 1.181064,
        1.216988, 1.256238, 1.289746, 1.327119, 1.364734, 1.402489, 1.443466, 1.488032, 1.551764, 1.619713,
        1.69624, 1.835765, 2.029834, 2.580297, 3.503426, 3.960801, 4.033739, 4.123448, 4.263152, 4.758952,
        5.177679, 5.8673, 6.149979
    ),
    "repetition_penalty": (
        0.014692, 0.092285, 0.156745, 0.249511, 0.513156, 0.585225, 0.636532, 0.681578, 0.73075, 0.76705,
        0.797949, 0.822164, 0.858571, 0.891992, 0.916473, 0.944242, 0.969494, 0.996104, 1.018223, 1.039545,
        1.070614, 1.097774, 1.126923, 1.162983, 1.199675, 1.228399, 1.276123, 1.341341, 1.405692, 1.54922,
        1.766795, 3.413456, 4.845996
    ),
    "max_new_tokens": (
        1.466565, 1.831064, 2.064568, 2.151928, 2.220321, 2.272204, 2.316737, 2.357072, 2.38578, 2.411266,
        2.437223, 2.456191, 2.47307, 2.488506, 2.503709, 2.515219, 2.525862, 2.537928, 2.545959, 2.554667,
        2.562545, 2.571452, 2.580261, 2.590683, 2.60503, 2.622137, 2.653712, 2.708992, 2.839499, 3.073658,
        3.347764, 3.627231, 3.940503
    ),
}
_DISTRIBUTIONS = {gene: _distribution(q) for gene, q in BLEND_QUANTILES.items()}


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
