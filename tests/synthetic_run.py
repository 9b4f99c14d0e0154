"""Five generations of the evolutionary core with synthetic objectives; prints JSON.

Run in separate processes with different PYTHONHASHSEED to prove no salted hash() leaks in.
"""

from __future__ import annotations

import json
import sys

from coral.config import Config
from coral.evolution.selection import Evolution, Scored
from coral.rng import stream


def synthetic_objectives(seed: int, generation: int, genome) -> dict[str, float]:
    noise = stream(seed, "synthetic-objectives", generation, genome.id).random(5)
    g, k = genome.genes, genome.knobs
    return {
        "bugfix": round(min(1.0, g.rank / 16 * 0.7 + 0.3 * noise[0]), 6),
        "style": round(float(noise[1]), 6),
        "security": round(1.0 - g.dropout, 6),
        "runtime": round(min(1.0, k.temperature * noise[3]), 6),
        "syntax": 1.0 if g.adapter_type == "dora" else round(float(noise[4]), 6),
        "fix_chance": round(k.top_p * g.rank / 16 / max(1.0, k.temperature * 2), 6),  # no noise: computed
    }


def main(seed: int, strategy: str, generations: int = 5) -> dict:
    config = Config(seed=seed, population=8, generations=generations, strategy=strategy)
    evo = Evolution(config)
    population = evo.initial_population()
    history = []
    for g in range(generations):
        scored = [Scored(x, synthetic_objectives(seed, g, x)) for x in population]
        survivors, info = evo.select(g, scored)
        history.append({
            "population": [x.model_dump(mode="json") | {"id": x.id} for x in population],
            "survivors": [s.genome.id for s in survivors],
            "info": info,
        })
        population = evo.breed(g)
    return {"history": history}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), sys.argv[2]), sort_keys=True))
