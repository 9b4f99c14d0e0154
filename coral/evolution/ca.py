"""The cellular automaton behind every genome, and the features read off its behaviour.

Rule family: 2-D outer-totalistic ("life-like") rules on a torus, B/S notation. A rule is two
9-bit masks: a dead cell with n live Moore neighbours is born if bit n of `birth` is set, a live
one survives if bit n of `survive` is set. The family holds still lifes, oscillators, gliders,
slow decay, chaos and explosive growth, so the four features below really vary between seeds
(docs/ca.md). B0 rules are excluded: with B0 the empty grid flashes and every other feature
degenerates to that strobe.

Features, each in [0, 1]:
- intensity:    mean live fraction over the whole history.
- complexity:   mean normalised entropy of the 2x2 block patterns (16 kinds) over the history;
                0 for empty or solid grids, high for rich texture.
- periodicity:  among cells that change in the final window, the fraction whose trajectory
                repeats with a period in 2..MAX_PERIOD; 0 when nothing moves.
- convergence:  1 - late activity / early activity, where activity at step t is the distance of
                state t from the nearest of its MAX_PERIOD predecessors. Settling into a fixed
                point or a cycle scores 1; activity that never dies down scores near 0.
Plus `period`: the exact period of the final state (0 when none up to MAX_PERIOD).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coral.evolution.genome import CASeed

MAX_PERIOD = 8
FEATURES = ("complexity", "intensity", "periodicity", "convergence")


@dataclass(frozen=True)
class CAFeatures:
    complexity: float
    intensity: float
    periodicity: float
    convergence: float
    period: int  # exact period of the final state, 1 = fixed point, 0 = none up to MAX_PERIOD

    def vector(self) -> tuple[float, float, float, float]:
        return (self.complexity, self.intensity, self.periodicity, self.convergence)


def grid_from_seed(seed: CASeed) -> np.ndarray:
    flat = np.frombuffer(seed.cells.encode("ascii"), dtype=np.uint8) - ord("0")
    return flat.reshape(seed.height, seed.width).astype(np.uint8)


def cells_to_string(grid: np.ndarray) -> str:
    return "".join("1" if v else "0" for v in grid.reshape(-1))


def step(grid: np.ndarray, birth: int, survive: int) -> np.ndarray:
    """One synchronous update on a torus."""
    neighbours = sum(
        np.roll(np.roll(grid, dy, axis=0), dx, axis=1)
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if (dy, dx) != (0, 0)
    )
    born = np.array([(birth >> n) & 1 for n in range(9)], dtype=np.uint8)
    stays = np.array([(survive >> n) & 1 for n in range(9)], dtype=np.uint8)
    return np.where(grid == 1, stays[neighbours], born[neighbours]).astype(np.uint8)


def run(seed: CASeed) -> np.ndarray:
    """History of shape (steps + 1, height, width), starting with the initial grid."""
    grid = grid_from_seed(seed)
    history = [grid]
    for _ in range(seed.steps):
        grid = step(grid, seed.birth, seed.survive)
        history.append(grid)
    return np.stack(history)


def _block_entropy(grid: np.ndarray) -> float:
    codes = (
        grid
        + 2 * np.roll(grid, -1, axis=1)
        + 4 * np.roll(grid, -1, axis=0)
        + 8 * np.roll(np.roll(grid, -1, axis=0), -1, axis=1)
    )
    counts = np.bincount(codes.reshape(-1), minlength=16).astype(float)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum() / 4.0)


def _activity(history: np.ndarray) -> np.ndarray:
    """Per step t >= 1: fraction of cells differing from the closest of the last MAX_PERIOD states."""
    steps = history.shape[0]
    out = np.zeros(steps - 1)
    for t in range(1, steps):
        lags = range(1, min(MAX_PERIOD, t) + 1)
        out[t - 1] = min(float(np.mean(history[t] != history[t - lag])) for lag in lags)
    return out


def exact_period(history: np.ndarray) -> int:
    last = history[-1]
    for p in range(1, min(MAX_PERIOD, history.shape[0] - 1) + 1):
        if np.array_equal(last, history[-1 - p]):
            return p
    return 0


def _periodicity(history: np.ndarray) -> float:
    window = history[-(2 * MAX_PERIOD + 1) :] if history.shape[0] > 2 * MAX_PERIOD else history
    series = window.reshape(window.shape[0], -1).T  # cells x time
    moving = series.max(axis=1) != series.min(axis=1)
    if not moving.any():
        return 0.0
    movers = series[moving]
    periodic = np.zeros(movers.shape[0], dtype=bool)
    for p in range(2, MAX_PERIOD + 1):
        if window.shape[0] <= p:
            break
        periodic |= np.all(movers[:, p:] == movers[:, :-p], axis=1)
    return float(periodic.mean())


def features(seed: CASeed) -> CAFeatures:
    history = run(seed)
    activity = _activity(history)
    half = max(1, len(activity) // 2)
    early, late = float(activity[:half].mean()), float(activity[half:].mean()) if len(
        activity
    ) > half else float(activity[-1:].mean())
    convergence = 1.0 if early == 0.0 else float(np.clip(1.0 - late / early, 0.0, 1.0))
    return CAFeatures(
        complexity=float(np.mean([_block_entropy(g) for g in history])),
        intensity=float(history.mean()),
        periodicity=_periodicity(history),
        convergence=convergence,
        period=exact_period(history),
    )


def random_seed(rng: np.random.Generator, width: int, height: int, steps: tuple[int, int],
                density: float) -> CASeed:
    """A random rule (never B0) and a random initial grid of the given live density."""
    birth = int(rng.integers(1, 256)) << 1  # bits 1..8: no B0
    survive = int(rng.integers(0, 512))
    grid = (rng.random((height, width)) < density).astype(np.uint8)
    return CASeed(
        birth=birth,
        survive=survive,
        width=width,
        height=height,
        cells=cells_to_string(grid),
        steps=int(rng.integers(steps[0], steps[1] + 1)),
    )
