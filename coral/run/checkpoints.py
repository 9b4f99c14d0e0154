"""Per-generation checkpoints: everything `coral resume` needs to continue a run exactly.

A checkpoint is written after generation g's events are in the log: the evaluated population
and its scores, the population of g+1, Evolution.state(), the next event sequence number and
the adapter keys this run has trained. Written to a temp file, fsync'd, renamed: a reader sees
the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coral.errors import CoralError
from coral.evolution.genome import Genome, Knobs
from coral.evolution.selection import OBJECTIVES

SCHEMA = 1
PREFIX = "gen-"


class BaselineScores(BaseModel):
    """One baseline's record: objective means (with fixed@k and fitness), sample count and, per eval
    problem, whether any sample fixed it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    objectives: dict[str, float]
    samples: int | None = None  # None: a run made before noise control recorded only the two others
    problems: dict[str, bool]


class Baseline(BaselineScores):
    """The baseline_finished event's data: the no-adapter model's record, how it sampled, and the
    echo baseline's record. The JSON leaves out what a run made before noise control lacked
    (`as_json`), so old run folders read and write as they were."""

    knobs: Knobs | None = None
    greedy: bool | None = None
    seed: int | None = None
    echo: BaselineScores | None = None

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class Checkpoint(BaseModel):
    """One generation's checkpoint; on disk, its JSON (the same as before this was typed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    generation: int = Field(ge=0, strict=True)  # the generation this checkpoint closes
    population: list[Genome]  # genomes evaluated in `generation`
    scores: dict[str, dict[str, float]]  # genome id -> objectives (+ fixed@k)
    next_population: list[Genome]  # genomes of generation + 1
    evolution: dict[str, Any]  # Evolution.state(): Evolution's own, restored by Evolution.from_state
    next_seq: int = Field(ge=0, strict=True)  # the sequence number of the next event
    # (gene key, adapter cache key) of every adapter this run has asked for, sorted
    trained_keys: list[tuple[str, str]] = Field(default_factory=list)
    baseline: Baseline | None = None
    schema_: int = Field(default=SCHEMA, alias="schema")

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", by_alias=True, exclude={"baseline"})
        return {"schema": data.pop("schema"), **data,
                "baseline": self.baseline.as_json() if self.baseline is not None else None}

    @classmethod
    def from_json(cls, data: Any, source: str = "checkpoint") -> Checkpoint:
        """A checkpoint from parsed JSON; anything else is one CoralError naming `source` and the field."""
        if not isinstance(data, dict):
            raise CoralError(f"{source}: not a checkpoint (a JSON {_json_kind(data)}, expected an object)")
        if data.get("schema") != SCHEMA:
            raise CoralError(f"{source}: checkpoint schema {data.get('schema')!r}, expected {SCHEMA}")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise CoralError(f"{source}: checkpoint lacks {missing[0]!r}")
        try:
            checkpoint = cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise CoralError(f"{source}: checkpoint field {where!r}: {first['msg']}") from None
        # A run checkpointed before an objective existed has no value for it: selection could not
        # rank its survivors, so it is not resumed by a version that has the objective.
        held = [*checkpoint.scores.values(),
                *(s.get("objectives", {}) for s in checkpoint.evolution.get("survivors", []))]
        lacking = sorted({n for scores in held for n in OBJECTIVES if n not in scores})
        if lacking:
            raise CoralError(f"{source}: checkpoint holds no {lacking[0]!r} objective (it was written before "
                             "that objective existed); this run cannot be resumed, start a new one")
        return checkpoint


_REQUIRED = ("generation", "population", "scores", "next_population", "evolution", "next_seq",
             "trained_keys", "baseline")


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
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        # Some mounts (FUSE, gVisor's, a Modal Volume's) cannot fsync a folder: the rename is
        # done, and there the Volume commit, not the folder's fsync, makes it last.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF,
                             errno.EISDIR, errno.EACCES, errno.EPERM, errno.ENOSYS):
            raise


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
    except ValueError:  # an integer past Python's digit limit: json raises a plain ValueError
        raise CoralError(f"{path}: unreadable checkpoint (an integer has more than "
                         f"{sys.get_int_max_str_digits()} digits)") from None
    except RecursionError:
        raise CoralError(f"{path}: unreadable checkpoint (nested too deeply)") from None
    except OSError as exc:
        raise CoralError(f"{path}: unreadable checkpoint ({exc.strerror})") from None
    return Checkpoint.from_json(data, str(path))
