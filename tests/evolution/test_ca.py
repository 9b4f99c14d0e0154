import numpy as np
import pytest

from coral.evolution import ca
from coral.evolution.genome import CASeed
from coral.rng import stream

LIFE_B3 = 1 << 3
LIFE_S23 = (1 << 2) | (1 << 3)


def seed_with(cells: list[tuple[int, int]], size: int = 12, steps: int = 30,
              birth: int = LIFE_B3, survive: int = LIFE_S23) -> CASeed:
    grid = np.zeros((size, size), dtype=np.uint8)
    for y, x in cells:
        grid[y, x] = 1
    return CASeed(birth=birth, survive=survive, width=size, height=size,
                  cells=ca.cells_to_string(grid), steps=steps)


def test_blinker_is_a_period_2_oscillator() -> None:
    f = ca.features(seed_with([(5, 4), (5, 5), (5, 6)]))
    assert f.period == 2
    assert f.periodicity == pytest.approx(1.0)  # every moving cell repeats with period 2
    assert f.convergence == pytest.approx(1.0)  # it is in its cycle from the start
    assert f.intensity == pytest.approx(3 / 144)


def test_block_is_a_still_life() -> None:
    f = ca.features(seed_with([(3, 3), (3, 4), (4, 3), (4, 4)]))
    assert f.period == 1 and f.periodicity == 0.0 and f.convergence == 1.0
    assert f.intensity == pytest.approx(4 / 144) and f.complexity > 0


def test_empty_grid_is_dead() -> None:
    f = ca.features(seed_with([]))
    assert (f.intensity, f.complexity, f.periodicity, f.period) == (0.0, 0.0, 0.0, 1)


def test_glider_moves_without_short_period() -> None:
    f = ca.features(seed_with([(0, 1), (1, 2), (2, 0), (2, 1), (2, 2)], size=16, steps=20))
    assert f.period == 0  # it translates, so the state never repeats within MAX_PERIOD
    assert f.intensity == pytest.approx(5 / 256)  # a glider keeps its 5 cells


def test_cells_are_not_all_killed_by_the_step() -> None:
    """The predecessor's CA killed every live cell each step; life's blinker must survive."""
    grid = ca.grid_from_seed(seed_with([(5, 4), (5, 5), (5, 6)]))
    nxt = ca.step(grid, LIFE_B3, LIFE_S23)
    assert nxt.sum() == 3 and nxt[4, 5] == nxt[5, 5] == nxt[6, 5] == 1


def test_features_vary_over_random_seeds() -> None:
    rng = stream(0, "test:ca-variety")
    rows = [ca.features(ca.random_seed(rng, 16, 16, (24, 48), 0.35)).vector() for _ in range(200)]
    values = np.array(rows)
    for i, name in enumerate(ca.FEATURES):
        column = values[:, i]
        assert column.min() >= 0.0 and column.max() <= 1.0
        assert column.std() >= 0.05, name
        assert len(set(np.round(column, 9))) >= 20, name


def test_random_seeds_never_use_b0() -> None:
    rng = stream(1, "test:b0")
    assert all(ca.random_seed(rng, 8, 8, (5, 9), 0.3).birth & 1 == 0 for _ in range(500))
