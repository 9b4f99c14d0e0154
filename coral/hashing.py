"""Content hashes over a canonical JSON encoding.

Python's `hash()` is salted per process (PYTHONHASHSEED), so it never names anything here.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, floats via repr: the same value gives the same bytes anywhere."""
    return json.dumps(_normalise(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _normalise(value: Any) -> Any:
    if hasattr(value, "model_dump"):  # pydantic models
        return _normalise(value.model_dump(mode="json"))
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot hash non-finite float {value!r}")
        # Round away float noise below 1e-12 so 0.1+0.2 and 0.3 hash alike.
        return float(f"{value:.12g}")
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    raise TypeError(f"cannot canonicalise {type(value).__name__}")


def content_hash(value: Any, length: int = 16) -> str:
    """sha256 of the canonical encoding, hex, truncated to `length` characters."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]


def file_fingerprint(paths: list[Path], root: Path | None = None) -> str:
    """sha256 over (relative name, content) of files, in sorted order: a folder's content id."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: str(p.relative_to(root) if root else p)):
        name = str(path.relative_to(root)) if root else path.name
        digest.update(name.encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()
