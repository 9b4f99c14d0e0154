"""transformers + peft: base model loading, LoRA/DoRA training, batched generation.

    load_base_model / shared_base_model   coral.model.loading   (torch)
    train_adapter, training_pairs         coral.model.train     (torch, peft)
    generate_for_genome                   coral.model.generate  (torch, peft)
    adapter_cache_key, data_fingerprint   coral.model.adapters  (no torch)

Names resolve lazily, so `import coral.model.adapters` (cache keys in an orchestrator) does not
pull in torch. See docs/model.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AdapterInfo": "coral.model.adapters",
    "adapter_cache_key": "coral.model.adapters",
    "data_fingerprint": "coral.model.adapters",
    "find_adapter": "coral.model.adapters",
    "read_adapter": "coral.model.adapters",
    "LoadedModel": "coral.model.loading",
    "base_fingerprint": "coral.model.loading",
    "load_base_model": "coral.model.loading",
    "shared_base_model": "coral.model.loading",
    "train_adapter": "coral.model.train",
    "training_pairs": "coral.model.train",
    "generate_for_genome": "coral.model.generate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'coral.model' has no attribute {name!r}")
