"""A genome: a cellular-automaton seed plus the genes derived from it.

Heavy genes decide what the model learns (an adapter, trained and cached by content hash);
cheap knobs decide how it generates. `overrides` records genes set directly by gene-level
mutation: they survive later re-derivation from the CA, so no gene is ever silently reset.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from coral.hashing import content_hash

AdapterType = Literal["lora", "dora"]
HEAVY_GENES = ("rank", "alpha", "dropout", "target_modules", "adapter_type")
KNOBS = ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens")


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HeavyGenes(Frozen):
    rank: int = Field(ge=1)
    alpha: int = Field(ge=1)
    dropout: float = Field(ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] = Field(min_length=1)
    adapter_type: AdapterType


class Knobs(Frozen):
    temperature: float = Field(gt=0.0)
    top_p: float = Field(gt=0.0, le=1.0)
    top_k: int = Field(ge=1)
    repetition_penalty: float = Field(ge=1.0)
    max_new_tokens: int = Field(ge=1)


class CASeed(Frozen):
    """Outer-totalistic rule (birth/survive masks over 0..8 live neighbours), grid and steps."""

    birth: int = Field(ge=0, lt=512)
    survive: int = Field(ge=0, lt=512)
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    cells: str  # row-major '0'/'1' string, width * height long
    steps: int = Field(ge=1)

    def rule_string(self) -> str:
        born = "".join(str(n) for n in range(9) if self.birth >> n & 1)
        stays = "".join(str(n) for n in range(9) if self.survive >> n & 1)
        return f"B{born}/S{stays}"


class Genome(Frozen):
    seed: CASeed
    genes: HeavyGenes
    knobs: Knobs
    overrides: dict[str, Any] = Field(default_factory=dict)  # gene name -> value set directly
    parents: tuple[str, ...] = ()
    origin: str = "ca"  # ca | random | grid | crossover | mutation:ca | mutation:gene:NAME

    @property
    def id(self) -> str:
        """Content hash of seed and genes (lineage is recorded, not identity)."""
        return content_hash({"seed": self.seed, "genes": self.genes, "knobs": self.knobs})

    def gene_vector(self) -> dict[str, Any]:
        return {**self.genes.model_dump(), **self.knobs.model_dump()}
