"""NSGA-II building blocks: non-dominated sort, crowding distance, survivor selection.

All objectives are maximised. Functions take plain arrays and return indices, so they compose
(as pymoo's operators do) and can be checked against brute force.
"""

from __future__ import annotations

import numpy as np

from coral.evolution import pareto


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a >= b) and np.any(a > b))


def non_dominated_sort(objectives: np.ndarray) -> list[list[int]]:
    """Fronts of indices, best first, each ascending (the same sort coral.analysis draws)."""
    if len(objectives) == 0:
        return []
    return [front.tolist() for front in pareto.fronts(objectives)]


def crowding_distance(objectives: np.ndarray) -> np.ndarray:
    """Per point of one front: sum over objectives of the normalised gap between neighbours."""
    n, m = objectives.shape
    distance = np.zeros(n)
    if n <= 2:
        distance[:] = np.inf
        return distance
    for k in range(m):
        order = np.argsort(objectives[:, k], kind="stable")
        low, high = objectives[order[0], k], objectives[order[-1], k]
        if high == low:
            # Every point equal: no extremes to keep. Marking the first and last by index (as
            # before 2026-12-06) let a constant objective, security on the default run,
            # prefer genomes by their position in the list (docs/objectives.md).
            continue
        distance[order[0]] = distance[order[-1]] = np.inf
        gaps = (objectives[order[2:], k] - objectives[order[:-2], k]) / (high - low)
        distance[order[1:-1]] += gaps
    return distance


def rank_and_crowding(objectives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Front rank (0 = best) and crowding distance of every point."""
    rank = np.zeros(len(objectives), dtype=int)
    crowd = np.zeros(len(objectives))
    for r, front in enumerate(non_dominated_sort(objectives)):
        rank[front] = r
        crowd[front] = crowding_distance(objectives[front])
    return rank, crowd


def select_survivors(objectives: np.ndarray, k: int) -> list[int]:
    """Indices of k survivors: whole fronts first, the last front cut by crowding distance.

    Callers pass distinct individuals (deduplicated by genome id), so survivors are distinct.
    Ties in crowding break by index, which is deterministic.
    """
    chosen: list[int] = []
    for front in non_dominated_sort(objectives):
        if len(chosen) + len(front) <= k:
            chosen.extend(front)
            continue
        crowd = crowding_distance(objectives[front])
        order = sorted(range(len(front)), key=lambda i: (-crowd[i], front[i]))
        chosen.extend(front[i] for i in order[: k - len(chosen)])
        break
    return chosen


def tournament(
    rank: np.ndarray, crowd: np.ndarray, rng: np.random.Generator, size: int = 2
) -> int:
    """Crowded-comparison tournament: lower rank wins, then larger crowding distance."""
    entrants = rng.choice(len(rank), size=min(size, len(rank)), replace=False)
    return int(min(entrants, key=lambda i: (rank[i], -crowd[i], i)))
