"""Random streams derived from (seed, generation, genome id, purpose).

There is no global RNG in CORAL. Every consumer asks for its own stream, so results do not
depend on the order in which work happens, on the number of workers or on the backend.
"""

from __future__ import annotations

import hashlib

import numpy as np


def stream_seed(seed: int, generation: int | None, genome_id: str | None, purpose: str) -> int:
    """A 128-bit integer from sha256 of the four coordinates (stable across processes)."""
    key = f"{seed}|{generation if generation is not None else '-'}|{genome_id or '-'}|{purpose}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:16], "big")


def stream(
    seed: int, purpose: str, generation: int | None = None, genome_id: str | None = None
) -> np.random.Generator:
    """A PCG64 generator for one purpose; the same coordinates always give the same draws."""
    return np.random.Generator(np.random.PCG64(stream_seed(seed, generation, genome_id, purpose)))


def torch_seed(seed: int, purpose: str, key: str = "") -> int:
    """A 63-bit seed for torch.manual_seed, derived the same way (e.g. from an adapter cache key)."""
    return stream_seed(seed, None, key, purpose) % (2**63 - 1)
