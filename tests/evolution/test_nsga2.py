import numpy as np

from coral.evolution import nsga2


def brute_fronts(points: np.ndarray) -> list[list[int]]:
    remaining = set(range(len(points)))
    fronts = []
    while remaining:
        front = sorted(i for i in remaining
                       if not any(nsga2.dominates(points[j], points[i]) for j in remaining))
        fronts.append(front)
        remaining -= set(front)
    return fronts


def test_fast_sort_matches_brute_force() -> None:
    rng = np.random.default_rng(7)
    for _ in range(30):
        pts = np.round(rng.random((int(rng.integers(1, 40)), int(rng.integers(2, 5)))), 1)
        assert nsga2.non_dominated_sort(pts) == brute_fronts(pts)


def test_crowding_keeps_extremes() -> None:
    pts = np.array([[0.0, 1.0], [0.5, 0.5], [0.6, 0.4], [1.0, 0.0]])
    d = nsga2.crowding_distance(pts)
    assert np.isinf(d[0]) and np.isinf(d[3]) and d[1] > 0 and d[2] > 0


def test_a_constant_objective_changes_no_crowding() -> None:
    """An objective every point shares (security 1.0 for every candidate of a run) says nothing
    about spread: the distances are those without it, and no point gets an infinite one by index."""
    pts = np.array([[0.1, 0.9], [0.4, 0.5], [0.5, 0.45], [0.9, 0.1], [0.3, 0.6]])
    with_constant = np.hstack([pts, np.ones((len(pts), 1))])
    assert np.array_equal(nsga2.crowding_distance(with_constant), nsga2.crowding_distance(pts))
    flat = np.ones((4, 2))
    assert not np.isinf(nsga2.crowding_distance(flat)).any()


def test_survivors_are_distinct_and_fronts_first() -> None:
    rng = np.random.default_rng(3)
    pts = rng.random((30, 3))
    keep = nsga2.select_survivors(pts, 10)
    assert len(keep) == len(set(keep)) == 10
    fronts = nsga2.non_dominated_sort(pts)
    rank = {i: r for r, f in enumerate(fronts) for i in f}
    worst_kept = max(rank[i] for i in keep)
    assert all(rank[i] >= worst_kept for i in set(range(30)) - set(keep))


def test_equal_points_do_not_dominate_each_other() -> None:
    pts = np.array([[0.5, 0.5], [0.5, 0.5], [0.1, 0.1]])
    assert nsga2.non_dominated_sort(pts) == [[0, 1], [2]]
