import numpy as np
import pytest

from coral.config import GeneSpace, KnobSpace
from coral.evolution import ca, mapping
from coral.rng import stream

WIDE = GeneSpace(
    ranks=[1, 2, 4, 8, 16, 32, 64],
    alphas=[2, 4, 8, 16, 32, 64],
    target_modules=[["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj"],
                    ["gate_proj", "up_proj", "down_proj"], ["q_proj", "v_proj", "up_proj"]],
)


def features_of(n: int, seed: int = 0):
    rng = stream(seed, "test:mapping")
    return [ca.features(ca.random_seed(rng, 16, 16, (24, 48), 0.35)) for _ in range(n)]


@pytest.mark.slow
def test_every_candidate_appears_over_200_seeds() -> None:
    genes = [mapping.heavy_genes(f, WIDE) for f in features_of(200)]
    assert {g.rank for g in genes} == set(WIDE.ranks)
    assert {g.alpha for g in genes} == set(WIDE.alphas)
    assert {g.target_modules for g in genes} == {tuple(m) for m in WIDE.target_modules}
    assert {g.adapter_type for g in genes} == {"lora", "dora"}
    knobs = KnobSpace(max_new_tokens=[64, 128, 256])
    k = [mapping.knobs(f, knobs) for f in features_of(200)]
    assert {x.max_new_tokens for x in k} == {64, 128, 256}
    assert all(knobs.temperature[0] <= x.temperature <= knobs.temperature[1] for x in k)
    assert len({x.top_k for x in k}) > 20
    assert {g.dropout for g in genes} == set(WIDE.dropout)  # levels, so equal genes recur


def test_mapping_is_a_function_of_behaviour() -> None:
    a, b = features_of(30, seed=3), features_of(30, seed=3)
    assert [mapping.heavy_genes(f, WIDE) for f in a] == [mapping.heavy_genes(f, WIDE) for f in b]


def test_the_committed_table_is_what_blend_quantiles_makes() -> None:
    # A smaller draw of the same recipe: the committed table (2,000 automata) must sit close to it
    # at every inner knot, so the table is the recipe's and not hand-edited.
    fresh = mapping.blend_quantiles(count=300)
    for gene, committed in mapping.BLEND_QUANTILES.items():
        assert len(committed) == 33 and list(committed) == sorted(committed)
        levels_fresh = [mapping.unit_of_blend(gene, q) for q in fresh[gene][4:-4]]
        expected = [i / 32 for i in range(4, 29)]
        assert max(abs(a - b) for a, b in zip(levels_fresh, expected, strict=True)) < 0.12, gene


def test_genes_are_spread_evenly_over_their_candidates() -> None:
    # The distribution function makes every gene uniform over random automata: each quarter of
    # [0, 1] holds about a quarter of them (wrapping a*f1 + b*f2 put 58 % of temperatures in the
    # top quarter, and 48 % of module sets on the first candidate).
    features = features_of(400, seed=11)
    for gene in mapping.BLENDS:
        units = [mapping.unit(f, gene) for f in features]
        shares = [sum(q / 4 <= u < (q + 1) / 4 or (q == 3 and u == 1.0) for u in units) / len(units)
                  for q in range(4)]
        assert all(0.17 <= s <= 0.33 for s in shares), (gene, shares)


def test_a_small_change_of_behaviour_is_a_small_change_of_genes() -> None:
    # Monotone and continuous in the blend: no value where a tiny change of behaviour moves a gene
    # from one end of its range to the other (as frac() folding did at every integer).
    for gene, quantiles in mapping.BLEND_QUANTILES.items():
        values = np.linspace(quantiles[0] - 1.0, quantiles[-1] + 1.0, 20_001)
        units = np.array([mapping.unit_of_blend(gene, v) for v in values])
        steps = np.diff(units)
        assert steps.min() >= 0.0 and units[0] == 0.0 and units[-1] == 1.0, gene
        knots, _ = mapping._DISTRIBUTIONS[gene]
        steepest = (1 / 32) / float(np.diff(knots).min())  # the steepest piece's slope
        assert steps.max() <= steepest * (values[1] - values[0]) * 1.001, gene
