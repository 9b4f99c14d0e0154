"""Per-generation checkpoints: everything `coral resume` needs to continue a run exactly.

A checkpoint is written after generation g's events are in the log: the evaluated population
and its scores, the population of g+1, Evolution.state(), the next event sequence number and
the adapter keys this run has trained. Written to a temp file, fsync'd, renamed: a reader sees
the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coral.errors import CoralError

SCHEMA = 1
PREFIX = "gen-"


@dataclass
class Checkpoint:
    generation: int  # the generation this checkpoint closes
    population: list[dict[str, Any]]  # genomes evaluated in `generation` (JSON)
    scores: dict[str, dict[str, float]]  # genome id -> objectives (+ fixed@k)
    next_population: list[dict[str, Any]]  # genomes of generation + 1
    evolution: dict[str, Any]  # Evolution.state()
    next_seq: int  # the sequence number of the next event
    trained_keys: list[list[str]] = field(default_factory=list)  # [gene key, adapter cache key] this run asked for
    baseline: dict[str, Any] | None = None
    schema: int = SCHEMA

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema, "generation": self.generation, "population": self.population,
            "scores": self.scores, "next_population": self.next_population,
            "evolution": self.evolution, "next_seq": self.next_seq,
            "trained_keys": self.trained_keys, "baseline": self.baseline,
        }

    @classmethod
    def from_json(cls, data: Any, source: str = "checkpoint") -> Checkpoint:
        """A checkpoint from parsed JSON; anything else is one CoralError naming `source`."""
        if not isinstance(data, dict):
            raise CoralError(f"{source}: not a checkpoint (a JSON {_json_kind(data)}, expected an object)")
        if data.get("schema") != SCHEMA:
            raise CoralError(f"{source}: checkpoint schema {data.get('schema')!r}, expected {SCHEMA}")
        missing = [k for k in _FIELDS if k not in data]
        if missing:
            raise CoralError(f"{source}: checkpoint lacks {missing[0]!r}")
        for key, kinds in _FIELDS.items():
            value = data[key]
            if not isinstance(value, kinds) or isinstance(value, bool):
                want = " or ".join(_json_kind(k()) if k is not type(None) else "null" for k in kinds)
                raise CoralError(f"{source}: checkpoint field {key!r} is a JSON {_json_kind(value)}, "
                                 f"expected {want}")
        for key in ("population", "next_population"):
            if not all(isinstance(g, dict) for g in data[key]):
                raise CoralError(f"{source}: checkpoint field {key!r} holds something that is not a genome")
        return cls(**{k: data[k] for k in _FIELDS})


# Each field's JSON type(s): what the engine and the ingestor rely on when they read one.
_FIELDS: dict[str, tuple[type, ...]] = {
    "generation": (int,), "population": (list,), "scores": (dict,), "next_population": (list,),
    "evolution": (dict,), "next_seq": (int,), "trained_keys": (list,), "baseline": (dict, type(None)),
}


def _json_kind(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number",
             float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def checkpoint_path(folder: Path, generation: int) -> Path:
    return folder / f"{PREFIX}{generation:05d}.json"


def write_atomic(path: Path, text: str) -> None:
    """Temp file in the same folder, fsync, rename, fsync the folder: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save(folder: Path, checkpoint: Checkpoint) -> Path:
    path = checkpoint_path(folder, checkpoint.generation)
    write_atomic(path, json.dumps(checkpoint.to_json(), sort_keys=True) + "\n")
    return path


def latest(folder: Path) -> Checkpoint | None:
    """The checkpoint of the highest generation, or None when the run has none yet."""
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.glob(f"{PREFIX}*.json") if p.stem[len(PREFIX):].isdigit())
    if not files:
        return None
    return load(files[-1])


def load(path: Path) -> Checkpoint:
    """One checkpoint file; a file that is not one is a CoralError naming it (and the line)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CoralError(f"{path}:{exc.lineno}: unreadable checkpoint ({exc.msg})") from None
    except UnicodeDecodeError:
        raise CoralError(f"{path}: unreadable checkpoint (not UTF-8 text)") from None
    except OSError as exc:
        raise CoralError(f"{path}: unreadable checkpoint ({exc.strerror})") from None
    return Checkpoint.from_json(data, str(path))
