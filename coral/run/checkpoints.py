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
    trained_keys: list[str] = field(default_factory=list)  # adapter keys this run has asked for
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
    def from_json(cls, data: dict[str, Any], source: str = "checkpoint") -> Checkpoint:
        if data.get("schema") != SCHEMA:
            raise CoralError(f"{source}: checkpoint schema {data.get('schema')!r}, expected {SCHEMA}")
        try:
            return cls(**{k: data[k] for k in (
                "generation", "population", "scores", "next_population", "evolution", "next_seq",
                "trained_keys", "baseline")})
        except KeyError as exc:
            raise CoralError(f"{source}: checkpoint lacks {exc.args[0]!r}") from None


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
    path = files[-1]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CoralError(f"{path}: unreadable checkpoint ({exc})") from None
    return Checkpoint.from_json(data, str(path))
