"""Pareto fronts and hypervolume against brute force: a naive O(n^2) front and Monte Carlo."""

from __future__ import annotations

import numpy as np
import pytest

from coral.errors import CoralError
from coral.evolution.pareto import front_ranks, fronts, hypervolume, pareto_front
from coral.rng import stream


def naive_front(points: np.ndarray) -> list[int]:
    out = []
    for i, p in enumerate(points):
        if not any(all(q >= p) and any(q > p) for j, q in enumerate(points) if j != i):
            out.append(i)
    return out


@pytest.mark.parametrize("dims", [2, 3, 4])
def test_front_equals_naive_front(dims: int) -> None:
    for trial in range(30):
        rng = stream(0, "pareto-test", trial, str(dims))
        # Rounded values make ties and duplicates common: the cases a sloppy front gets wrong.
        points = np.round(rng.random((int(rng.integers(1, 40)), dims)), 1)
        assert pareto_front(points).tolist() == naive_front(points)
        ranks = front_ranks(points)
        layers = fronts(points)
        assert sorted(np.concatenate(layers).tolist()) == list(range(len(points)))
        for rank, members in enumerate(layers):
            rest = np.flatnonzero(ranks >= rank)
            assert sorted(members.tolist()) == sorted(rest[naive_front(points[rest])].tolist())


def monte_carlo(points: np.ndarray, reference: np.ndarray, samples: int, seed: int) -> tuple[float, float]:
    upper = points.max(axis=0)
    box = float(np.prod(upper - reference))
    draws = reference + stream(seed, "hv-monte-carlo").random((samples, points.shape[1])) * (upper - reference)
    hit = np.zeros(samples, dtype=bool)
    for p in points:
        hit |= (draws <= p).all(axis=1)
    share = hit.mean()
    return box * share, box * np.sqrt(share * (1 - share) / samples)


@pytest.mark.parametrize("dims", [2, 3])
def test_hypervolume_matches_monte_carlo(dims: int) -> None:
    for trial in range(8):
        rng = stream(1, "hv-test", trial, str(dims))
        points = rng.random((int(rng.integers(2, 25)), dims))
        reference = np.full(dims, 0.1)
        exact = hypervolume(points, reference)
        estimate, error = monte_carlo(points[(points > reference).all(axis=1)], reference, 200_000, trial)
        assert abs(exact - estimate) <= 5 * error + 1e-12, (trial, exact, estimate, error)


def test_hypervolume_known_values_and_convention() -> None:
    assert hypervolume([[1.0, 1.0]]) == 1.0
    assert hypervolume([[1.0, 0.5], [0.5, 1.0]]) == pytest.approx(0.75)
    assert hypervolume([[1, 1, 1], [2, 0.5, 0.5]]) == pytest.approx(1.25)
    # Dominated points and points not above the reference add nothing (maximisation).
    assert hypervolume([[1.0, 0.5], [0.5, 1.0], [0.4, 0.4], [2.0, 0.0]]) == pytest.approx(0.75)
    assert hypervolume([[0.5, 0.5]], reference=[0.5, 0.0]) == 0.0
    assert hypervolume([]) == 0.0


def test_bad_input_is_one_clear_error() -> None:
    with pytest.raises(CoralError, match="reference"):
        hypervolume([[1.0, 1.0]], reference=[0.0, 0.0, 0.0])
    with pytest.raises(CoralError, match="not 4"):
        hypervolume([[1.0, 1.0, 1.0, 1.0]], reference=[0, 0, 0, 0])
    with pytest.raises(CoralError, match="finite"):
        pareto_front([[float("nan"), 1.0]])
