"""Pareto fronts and exact hypervolume, for maximised objectives (every CORAL objective is).

Convention: a point p dominates q when p >= q in every objective and p > q in at least one.
The hypervolume of a point set with reference r is the volume of the union of the boxes
[r, p] over the points; a point not strictly above r in every objective adds nothing. The
reference is usually the origin (objectives lie in [0, 1]), so the hypervolume is the share
of the unit square or cube that the set dominates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from coral.errors import CoralError


def _points(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    array = np.asarray(points, dtype=float)
    if array.ndim != 2:
        raise CoralError(f"points must be a 2-D array (n points x d objectives), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise CoralError("points must be finite numbers")
    return array


def dominated_mask(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """True where some other point dominates this one."""
    p = _points(points)
    out = np.zeros(len(p), dtype=bool)
    for start in range(0, len(p), 512):  # blocks keep the n x n comparison small in memory
        block = p[start:start + 512]
        ge = np.all(p[None, :, :] >= block[:, None, :], axis=2)
        gt = np.any(p[None, :, :] > block[:, None, :], axis=2)
        out[start:start + len(block)] = np.any(ge & gt, axis=1)
    return out


def pareto_front(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points, ascending (duplicates of a front point stay in)."""
    return np.flatnonzero(~dominated_mask(points))


def fronts(points: Sequence[Sequence[float]] | np.ndarray) -> list[np.ndarray]:
    """Non-dominated sorting: front 0 is the Pareto front, front 1 the front once 0 is gone..."""
    p = _points(points)
    left = np.arange(len(p))
    out = []
    while len(left):
        mask = dominated_mask(p[left])
        out.append(left[~mask])
        left = left[mask]
    return out


def front_ranks(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    ranks = np.zeros(len(_points(points)), dtype=int)
    for rank, members in enumerate(fronts(points)):
        ranks[members] = rank
    return ranks


def _hv2(p: np.ndarray, ref: np.ndarray) -> float:
    """Sweep by x descending: each point higher than all before adds a strip."""
    order = np.argsort(-p[:, 0], kind="stable")
    area, best_y = 0.0, ref[1]
    for x, y in p[order]:
        if y > best_y:
            area += (x - ref[0]) * (y - best_y)
            best_y = y
    return float(area)


def hypervolume(points: Sequence[Sequence[float]] | np.ndarray,
                reference: Sequence[float] | None = None) -> float:
    """Exact hypervolume in 1, 2 or 3 dimensions (maximisation; reference default: origin)."""
    if len(points) == 0:
        return 0.0
    p = _points(points)
    d = p.shape[1]
    ref = np.zeros(d) if reference is None else np.asarray(reference, dtype=float)
    if ref.shape != (d,):
        raise CoralError(f"reference has {ref.size} coordinates; the points have {d}")
    if d not in (1, 2, 3):
        raise CoralError(f"hypervolume is exact in 1, 2 or 3 dimensions, not {d}")
    p = p[(p > ref).all(axis=1)]
    if not len(p):
        return 0.0
    if d == 1:
        return float(p[:, 0].max() - ref[0])
    if d == 2:
        return _hv2(p, ref)
    # 3-D: slabs between consecutive z levels, each a 2-D hypervolume of the points above it.
    levels = np.unique(p[:, 2])[::-1]
    volume = 0.0
    for k, z in enumerate(levels):
        below = levels[k + 1] if k + 1 < len(levels) else ref[2]
        volume += _hv2(p[p[:, 2] >= z][:, :2], ref[:2]) * (z - below)
    return float(volume)
