"""Train/eval split of a benchmark: adapters train on `train`, genomes are scored on `eval`.

Read from a split file ({"train": [...], "eval": [...]}, default ROOT/split.json). A benchmark
without one (a plain QuixBugs clone) gets a fixed derived split: problems ordered by
sha256("coral-split-v1|" + name), ties (never seen in practice) broken by name; the first
ceil(n * EVAL_FRACTION) form `eval`, the rest `train`. The order depends on names only, so the
same clone always splits the same way on any machine, and editing a program never moves it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coral.benchmark.loader import load_benchmark, parse_json, read_text
from coral.errors import BenchmarkError

if TYPE_CHECKING:
    from coral.config import Config

SPLIT_FILE = "split.json"
EVAL_FRACTION = 0.5
DERIVED_SALT = "coral-split-v1"


@dataclass(frozen=True)
class Split:
    train: list[str]
    eval: list[str]

    def as_dict(self) -> dict[str, list[str]]:
        return {"train": list(self.train), "eval": list(self.eval)}


def read_split(path: Path, names: Iterable[str]) -> Split:
    """A split file, checked: both lists non-empty, no duplicates, disjoint, names exist."""
    known = set(names)
    data: Any = parse_json(path, read_text(path))
    if not isinstance(data, dict) or set(data) != {"train", "eval"}:
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise BenchmarkError(f'{path}: expected an object with keys "train" and "eval", got {got}')
    lists: dict[str, list[str]] = {}
    for key in ("train", "eval"):
        value = data[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise BenchmarkError(f'{path}: "{key}" must be a list of problem names')
        if not value:
            raise BenchmarkError(f'{path}: "{key}" is empty')
        dupes = sorted({v for v in value if value.count(v) > 1})
        if dupes:
            raise BenchmarkError(f'{path}: "{key}" lists {dupes[0]!r} more than once')
        unknown = [v for v in value if v not in known]
        if unknown:
            raise BenchmarkError(f'{path}: "{key}" names unknown problem {unknown[0]!r}')
        lists[key] = sorted(value)
    both = sorted(set(lists["train"]) & set(lists["eval"]))
    if both:
        raise BenchmarkError(f"{path}: {both[0]!r} is in both train and eval")
    return Split(train=lists["train"], eval=lists["eval"])


def derive_split(names: Iterable[str], eval_fraction: float = EVAL_FRACTION) -> Split:
    """The fixed split of a benchmark without a split file (see module docstring)."""
    ordered = sorted(set(names), key=lambda n: (_name_digest(n), n))
    if len(ordered) < 2:
        raise BenchmarkError(
            f"cannot split {len(ordered)} problem(s) into train and eval: need at least 2"
        )
    n_eval = min(len(ordered) - 1, max(1, math.ceil(len(ordered) * eval_fraction)))
    return Split(train=sorted(ordered[n_eval:]), eval=sorted(ordered[:n_eval]))


def _name_digest(name: str) -> str:
    return hashlib.sha256(f"{DERIVED_SALT}|{name}".encode()).hexdigest()


def load_split(root: Path, split_path: Path | None = None) -> Split:
    """The split for the benchmark at `root`: `split_path`, else ROOT/split.json, else derived.

    An explicitly given `split_path` must exist; only the default file may be absent.
    """
    names = [p.name for p in load_benchmark(root)]
    if split_path is not None:
        if not Path(split_path).is_file():
            raise BenchmarkError(f"split file not found: {split_path}")
        return read_split(Path(split_path), names)
    default = Path(root) / SPLIT_FILE
    if default.is_file():
        return read_split(default, names)
    try:
        return derive_split(names)
    except BenchmarkError as exc:
        raise BenchmarkError(f"{root}: {exc}") from None


def split_for_config(config: Config) -> Split:
    return load_split(config.benchmark.root, config.benchmark.split)
