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
