"""The run registry: run directories under CORAL_HOME/runs, read without any database lock.

runs/RUN_ID/config.yaml    resolved config, train/eval split, package versions (written once)
runs/RUN_ID/status.json    state (starting, running, paused, finished, failed, stopped),
                           orchestrator pid and host, current generation; replaced atomically
`coral runs` and `coral status` read only these files and the event log.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from coral.config import Config, config_to_dict, validate_config
from coral.errors import AdapterError, CoralError
from coral.evolution.genome import Genome
from coral.execution.jobs import BUILTIN_BODIES, JobBodies
from coral.home import Home, is_run_id
from coral.model.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, METADATA, TEMP_PREFIX, gene_key, read_adapter
from coral.run.checkpoints import PREFIX, latest, write_atomic
from coral.run.checkpoints import load as load_checkpoint
from coral.run.events import read_events, science, summary

STATES = ("starting", "running", "paused", "finished", "failed", "stopped")
ACTIVE = ("starting", "running", "paused")
VERSIONED = ("coral", "torch", "transformers", "peft", "numpy", "pydantic", "duckdb", "modal")

# Run records are read on every dashboard refresh; libyaml's loader is ~10x faster than pure Python.
_RECORD_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def package_versions() -> dict[str, str]:
    out = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def ensure_new_run(home: Home, run_id: str) -> None:
    """The one "run already exists" check (registration, and launches before they start)."""
    if (home.run_dir(run_id) / "config.yaml").exists():
        raise CoralError(f"run {run_id} already exists in {home.runs}; use `coral resume {run_id}`")


def register_run(home: Home, run_id: str, config: Config, split: dict[str, list[str]],
                 bodies: JobBodies = BUILTIN_BODIES) -> Path:
    """Create the run directory with config.yaml; an existing run id is an error.

    `bodies` (replacement job bodies: tests, benchmarks) is recorded so a resume uses them too.
    """
    ensure_new_run(home, run_id)
    folder = home.run_dir(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"run_id": run_id, "created": time.time(), "config": config_to_dict(config),
              "split": split, "versions": package_versions()}
    if bodies.overridden:
        record["handlers"] = bodies.spec
    create_exclusive(folder / "config.yaml", yaml.safe_dump(record, sort_keys=False),
                     f"run {run_id} already exists in {home.runs}; use `coral resume {run_id}`")
    write_status(home, run_id, "starting")
    return folder


def create_exclusive(path: Path, text: str, exists: str) -> None:
    """Write `text` to `path` whole, and only if no one else created `path` first: the record is
    written aside and hard-linked into place, and link() fails when the name exists. Two
    registrations of one run id (two `coral run --detach`) cannot both succeed."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            raise CoralError(exists) from None
        except OSError as exc:
            if exc.errno not in NO_HARD_LINKS:
                raise
            _create_exclusive_without_link(path, text, exists)
    finally:
        os.unlink(temp)


# link(2) refused by the file system itself (a FUSE or network mount, such as a Modal Volume
# may be), not by the name existing.
NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS,
                 errno.EMLINK}


def _create_exclusive_without_link(path: Path, text: str, exists: str) -> None:
    """O_CREAT|O_EXCL still lets only one creator win; the record is then written in place, so
    a crash mid-write can leave it torn (a reader says so) where link() never would."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise CoralError(exists) from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


ORCHESTRATOR_LOCK = ".orchestrator.lock"  # a dot name: the Modal mirror never copies it
# flock refused by the file system itself (some network or FUSE mounts): no lock there.
NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}


@contextmanager
def orchestrating(home: Home, run_id: str) -> Iterator[None]:
    """Held by the one process that drives a run (`coral run`, `coral resume`, a detached or
    Modal orchestrator) from before it looks at the run until it has stopped its workers: an
    flock on runs/RUN_ID/.orchestrator.lock with the holder's PID inside. A second driver (two
    `coral resume` at once, a resume while the orchestrator is alive, stopped by SIGSTOP or still
    stopping its pool) gets one line naming the holder instead of appending to the same log and
    reading the same results partition. The kernel drops the lock when the holder dies, kill -9
    included, so a crash never leaves the run locked."""
    path = home.run_dir(run_id) / ORCHESTRATOR_LOCK
    handle = open(path, "a+", encoding="utf-8")  # held for the block's duration
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise CoralError(f"run {run_id} is being driven by process {holder} (its orchestrator, "
                             "alive or stopped): one orchestrator per run; `coral stop "
                             f"{run_id}` or end that process first") from None
        except OSError as exc:
            if exc.errno not in NO_FLOCK:
                raise
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


def run_record(home: Home, run_id: str) -> dict[str, Any]:
    path = home.run_config(run_id)
    if not path.is_file():
        raise CoralError(f"no run {run_id!r} in {home.runs}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_RECORD_LOADER)  # a safe loader
    except yaml.YAMLError as exc:
        raise CoralError(f"{path}: unreadable run record ({exc})") from None
    except UnicodeDecodeError:
        raise CoralError(f"{path}: unreadable run record (not UTF-8 text)") from None
    if not isinstance(data, dict) or "config" not in data:
        raise CoralError(f"{path}: not a run record (no 'config' key)")
    return data


def run_config(home: Home, run_id: str) -> Config:
    return validate_config(run_record(home, run_id)["config"], home.run_dir(run_id),
                           str(home.run_config(run_id)))


def write_status(home: Home, run_id: str, state: str, **fields: Any) -> None:
    if state not in STATES:
        raise ValueError(f"unknown run state {state!r}")
    path = home.run_dir(run_id) / "status.json"
    previous = read_json(path)
    record = {**previous, **fields, "state": state, "pid": os.getpid(),
              "host": socket.gethostname(), "updated": time.time()}
    write_atomic(path, json.dumps(record, sort_keys=True) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """A small JSON object file (status.json, progress.json) for a listing, or {} when it is
    missing or unreadable: an integer past Python's digit limit or nesting past its recursion
    limit included (a plain ValueError / RecursionError, which were tracebacks). Where a wrong
    guess costs more than a blank field (`coral status`, `coral resume`), `read_status` says so."""
    try:
        return read_status(path)
    except CoralError:
        return {}


def json_problem(exc: Exception) -> str:
    """What json.loads found wrong with a file, in a few words."""
    if isinstance(exc, json.JSONDecodeError):
        return f"line {exc.lineno}: {exc.msg}"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if str(exc).startswith("Exceeds the limit"):
        return f"an integer has more than {sys.get_int_max_str_digits()} digits"
    return str(exc)[:200]


def read_status(path: Path) -> dict[str, Any]:
    """A run's status.json: {} when there is none yet, else its object; one that cannot be read
    is a CoralError naming it, never taken for "no status" (which would let `coral resume`
    start a second orchestrator beside a live one)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, digit limit
        why = json_problem(exc)
        raise CoralError(f"{path}: unreadable run status ({why}); move it aside if the run's "
                         "process is gone") from None
    except OSError as exc:
        raise CoralError(f"{path}: unreadable run status ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise CoralError(f"{path}: not a run status (a JSON {type(data).__name__}, expected an object); "
                         "move it aside if the run's process is gone")
    return data


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class RunInfo:
    run_id: str
    state: str  # a STATES entry, or "interrupted": active but its orchestrator is gone
    generation: int | None
    generations: int | None
    strategy: str | None
    backend: str | None
    updated: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def effective_state(status: dict[str, Any]) -> str:
    state = status.get("state", "unknown")
    same_host = status.get("host") == socket.gethostname()
    if state in ACTIVE and same_host and isinstance(status.get("pid"), int):
        if not pid_alive(status["pid"]):
            return "interrupted"
    return state


def run_info(home: Home, run_id: str) -> RunInfo:
    folder = home.run_dir(run_id)
    status = read_json(folder / "status.json")
    config = read_json_yaml(folder / "config.yaml").get("config", {})
    return RunInfo(
        run_id=run_id, state=effective_state(status), generation=status.get("generation"),
        generations=config.get("generations"), strategy=config.get("strategy"),
        backend=status.get("backend", (config.get("backend") or {}).get("kind")),
        updated=status.get("updated"),
    )


def read_json_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_RECORD_LOADER)  # a safe loader
    except (FileNotFoundError, yaml.YAMLError, ValueError, RecursionError):  # UnicodeDecodeError is one
        return {}
    return data if isinstance(data, dict) else {}


def list_runs(home: Home) -> list[RunInfo]:
    """Every registered run, oldest first (run ids sort by creation time)."""
    if not home.runs.is_dir():
        return []
    return [run_info(home, name) for name in run_folders(home)]


def run_folders(home: Home) -> list[str]:
    """Names of the folders under runs/ that are runs: a valid run id holding config.yaml.
    Anything else (`runs/bad name/`, a stray file) is skipped, so it cannot break a listing."""
    if not home.runs.is_dir():
        return []
    return sorted(p.name for p in home.runs.iterdir() if is_run_id(p.name) and (p / "config.yaml").is_file())


def run_status(home: Home, run_id: str) -> dict[str, Any]:
    """status.json, the effective state, and an event-log summary."""
    run_record(home, run_id)  # a clear error for unknown runs
    folder = home.run_dir(run_id)
    status = read_status(folder / "status.json")
    return {**status, "run_id": run_id, "state": effective_state(status),
            "log": summary(home.events_dir(run_id), run_id)}


# ---------------------------------------------------------------------- comparing runs


def run_science(home: Home, run_id: str) -> dict[str, Any]:
    """What must match between two runs of one config: populations, scores, event sequence."""

    folder = home.checkpoints_dir(run_id)
    populations, scores = [], []
    for path in sorted(folder.glob(f"{PREFIX}*.json")):
        point = load_checkpoint(path)
        populations.append(list(point.population))
        scores.append(point.scores)
    events = [science(e) for e in read_events(home.events_dir(run_id), run_id=run_id)]
    return {"populations": populations, "scores": scores,
            "event_ids": [e["seq"] for e in events], "event_types": [e["type"] for e in events],
            "events": events}


def run_meters(home: Home, run_id: str) -> list[str]:
    """The meters that counted the run's test costs (docs/sandbox.md "Meters"), in the order
    first seen; more than one means the run was resumed on a machine with another meter."""
    meters: list[str] = []
    for event in read_events(home.events_dir(run_id), run_id=run_id):
        meter = event.data.get("meter") if event.type == "job_finished" else None
        if isinstance(meter, str) and meter not in meters:
            meters.append(meter)
    return meters


def runtime_comparison(home: Home, a: str, b: str) -> str | None:
    """Why the runtime objective of runs `a` and `b` cannot be compared, or None when it can.
    Costs on different meters are different units (instructions, task clock, CPU time), and
    RUNTIME_RESOLUTION bands them differently, so equal programs can score differently."""
    meters = {run_id: run_meters(home, run_id) for run_id in (a, b)}
    mixed = [f"run {r} measured with {' then '.join(m)} (resumed on another machine)"
             for r, m in meters.items() if len(m) > 1]
    if mixed:
        return "runtime objective left out: " + "; ".join(mixed)
    if meters[a] and meters[b] and meters[a] != meters[b]:
        return (f"runtime objective left out: run {a} measured with {meters[a][0]}, run {b} with "
                f"{meters[b][0]} (set sandbox.meter alike on both to compare it)")
    return None


# Values derived from the runtime objective: left out with it (fitness weighs it).
_RUNTIME_DERIVED = ("runtime", "fitness")


def without_runtime(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_runtime(v) for k, v in value.items() if k not in _RUNTIME_DERIVED}
    if isinstance(value, list):
        return [without_runtime(v) for v in value]
    return value


def compare_runs(home: Home, a: str, b: str, notes: list[str] | None = None) -> dict[str, bool]:
    """Event ids are RUN_ID:SEQ; across two runs the comparable part is the seq -> type list.

    When the runs' runtime costs were counted by different meters (runtime_comparison), the
    runtime objective and the fitness that weighs it are left out of scores and events, and
    the reason is appended to `notes`. Populations are compared as they are: if selection
    weighed runtime, runs on different meters may rightly differ there."""
    x, y = run_science(home, a), run_science(home, b)
    reason = runtime_comparison(home, a, b)
    if reason is not None:
        x, y = without_runtime(x), without_runtime(y)
        if notes is not None:
            notes.append(reason)
    return {
        "populations": x["populations"] == y["populations"],
        "scores": x["scores"] == y["scores"],
        "event_ids": (x["event_ids"], x["event_types"]) == (y["event_ids"], y["event_types"]),
        "events": x["events"] == y["events"],
    }


# ---------------------------------------------------------------------- the adapter cache


def list_adapters(home: Home | None = None) -> list[dict[str, Any]]:
    """Cached adapters (key, size, genes) plus half-written or damaged entries, by name."""

    home = home or Home()
    out: list[dict[str, Any]] = []
    if not home.adapters.is_dir():
        return out
    for folder in sorted(home.adapters.iterdir()):
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        entry: dict[str, Any] = {"key": folder.name, "bytes": size, "genes": None, "problem": None}
        if folder.name.startswith(TEMP_PREFIX):
            entry["problem"] = "half-written (a trainer died)"
        else:
            try:
                entry["genes"] = read_adapter(folder).genes.model_dump(mode="json")
            except AdapterError as exc:
                entry["problem"] = f"damaged: {exc}"
        out.append(entry)
    return out


def used_adapter_keys(home: Home) -> set[str]:
    keys: set[str] = set()
    for info in list_runs(home):
        checkpoint = latest(home.checkpoints_dir(info.run_id))
        if checkpoint is not None:
            keys.update(cache_key for _, cache_key in checkpoint.trained_keys)
    return keys


def prune(home: Home | None = None, *, unused: bool = False, dry_run: bool = False,
          ) -> list[tuple[str, str]]:
    """Remove half-written and damaged adapters; with `unused`, also those no run used.

    An active run may be training into a temp folder right now: temp folders younger than an
    hour are kept.
    """

    home = home or Home()
    used = used_adapter_keys(home) if unused else set()
    removed = []
    for entry in list_adapters(home):
        folder = home.adapters / entry["key"]
        why = entry["problem"]
        if why and why.startswith("half-written") and time.time() - folder.stat().st_mtime < 3600:
            continue
        if why is None and unused and entry["key"] not in used:
            why = "no registered run used it"
        if why is None:
            continue
        removed.append((entry["key"], why))
        if not dry_run:
            shutil.rmtree(folder, ignore_errors=True)
    return removed


def trained_adapter(run_id: str, genome_id: str, home: Home | None = None) -> tuple[Genome, Path]:
    """A genome a run evaluated and the adapter folder the run trained for it (whole and intact,
    or AdapterError); one clear line when the run has no such genome or adapter."""
    home = home or Home()
    run_record(home, run_id)
    genome, trained = None, {}
    for path in sorted(home.checkpoints_dir(run_id).glob(f"{PREFIX}*.json")):
        point = load_checkpoint(path)
        for g in point.population:
            candidate = Genome.model_validate(g)
            if candidate.id == genome_id:
                genome = candidate
                trained = {gene: cache_key for gene, cache_key in point.trained_keys}
    if genome is None:
        raise CoralError(f"run {run_id} has no evaluated genome {genome_id!r}")
    cache_key = trained.get(gene_key(genome))
    if cache_key is None:
        raise CoralError(f"run {run_id}: no adapter recorded for genome {genome_id}")
    read_adapter(home.adapter_dir(cache_key))
    return genome, home.adapter_dir(cache_key)


def export_adapter(run_id: str, genome_id: str, out: str | Path, home: Home | None = None) -> Path:
    """Copy the adapter a run trained for `genome_id` to `out` as a standard peft folder."""
    _, folder = trained_adapter(run_id, genome_id, home)
    target = Path(out)
    if target.exists():
        raise CoralError(f"destination {target} already exists (pick a folder that does not)")
    try:
        target.mkdir(parents=True)
        for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, METADATA):
            shutil.copy2(folder / name, target / name)
    except OSError as exc:
        raise CoralError(f"destination {target}: cannot write there ({exc.strerror or exc})") from None
    return target
