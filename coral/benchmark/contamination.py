"""Which benchmark problems a model was trained on: its training manifest against their bodies.

A model folder may carry MANIFEST_FILE, the programs its training saw (the tiny model's build
writes one: name, origin and normalised-body hash per program, docs/tiny_model.md). A problem is
*contaminated* when the normalised body (coral.benchmark.bodies) of its reference or of its
buggy function is in that list: the model may repeat a memorised answer instead of repairing.
Instances of `coral bench mutate` are matched through their family's reference (the hash
ignores the function's name), so every instance of a family the model trained on is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coral.benchmark.bodies import HASH_VERSION, function_hashes
from coral.benchmark.loader import parse_json, read_text
from coral.benchmark.problem import Problem
from coral.errors import BenchmarkError

MANIFEST_FILE = "coral_training_manifest.json"


def manifest_path(model: str | Path) -> Path | None:
    """Where a local model folder's manifest would be; None for a hub id (no folder)."""
    folder = Path(model).expanduser()
    return folder / MANIFEST_FILE if folder.is_dir() else None


def read_training_manifest(model: str | Path) -> dict[str, Any] | None:
    """The model folder's manifest, checked; None when the model has none."""
    path = manifest_path(model)
    if path is None or not path.is_file():
        return None
    data = parse_json(path, read_text(path))
    programs = data.get("programs") if isinstance(data, dict) else None
    if not isinstance(programs, list) or not all(
        isinstance(p, dict) and isinstance(p.get("hash"), str) for p in programs
    ):
        raise BenchmarkError(f'{path}: expected an object with a "programs" list of {{name, hash}}')
    if data.get("hash") != HASH_VERSION:
        raise BenchmarkError(f"{path}: bodies hashed by {data.get('hash')!r}, this CORAL compares "
                             f"{HASH_VERSION!r}; rebuild the manifest")
    return data


def contamination(problems: Sequence[Problem], manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per contaminated problem, in the given order: which of its bodies matched
    ("reference", "buggy") and the names the manifest gives those programs."""
    names_by_hash: dict[str, set[str]] = {}
    for program in manifest["programs"]:
        if program["hash"]:
            names_by_hash.setdefault(program["hash"], set()).add(str(program.get("name", "")))
    rows = []
    for problem in problems:
        parts, matches = [], set()
        for part, source in (("reference", problem.correct_source), ("buggy", problem.buggy_source)):
            digest = function_hashes(source).get(problem.name)
            if digest is not None and digest in names_by_hash:
                parts.append(part)
                matches |= names_by_hash[digest]
        if parts:
            rows.append({"name": problem.name, "parts": parts, "matches": sorted(matches)})
    return rows


def report(problems: Sequence[Problem], model: str | Path) -> dict[str, Any]:
    """{"manifest": bool, "programs": n, "contaminated": [names] or None, "details": [...]}:
    contaminated is None when the model has no manifest (unknown, not clean)."""
    manifest = read_training_manifest(model)
    if manifest is None:
        return {"model": str(model), "manifest": False, "programs": 0, "contaminated": None,
                "details": []}
    rows = contamination(problems, manifest)
    return {"model": str(model), "manifest": True, "programs": len(manifest["programs"]),
            "contaminated": [r["name"] for r in rows], "details": rows}
