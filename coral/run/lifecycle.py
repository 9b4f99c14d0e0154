"""Starting, resuming and validating runs: what `coral run`, `coral resume`, `coral validate`
and the Modal orchestrator call. The pipeline itself is coral/run/engine.py.

Every function here receives a `RunContext` (coral/run/backend.py): the Backend that runs the
jobs (its transport, executor and worker launcher), the home, test job bodies, threads and the
progress sink. The Modal orchestrator hands in the Modal backend, so this layer never imports
the Modal layer above it (docs/architecture.md).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from coral.benchmark.loader import load_benchmark
from coral.benchmark.split import split_for_config
from coral.config import BackendConfig, Config, check_model_folder, describe_error, load_config
from coral.errors import ConfigError, CoralError
from coral.execution.jobs import BUILTIN_BODIES, JobBodies
from coral.execution.transport import TransportWriteFailed
from coral.home import Home, new_run_id
from coral.run import checkpoints as ckpt
from coral.run.backend import Backend, LocalBackend, RunContext
from coral.run.control import clear_requests, keep_requests, set_hold
from coral.run.engine import EvolutionEngine, Problems, answers_for, default_threads, prompts_for
from coral.run.events import read_events
from coral.run.registry import (
    compare_runs,
    effective_state,
    orchestrating,
    read_status,
    register_run,
    run_config,
    run_record,
    write_status,
)

log = logging.getLogger("coral.run.lifecycle")

# ---------------------------------------------------------------------- starting and resuming


@dataclass
class RunResult:
    run_id: str
    state: str  # finished | stopped
    wall_seconds: float
    worker_pids: list[int]
    retries: int
    lease_expiries: int
    cache_found_ready: int  # train jobs that found their adapter on disk (recorded only)


def load_problems(config: Config, split: dict[str, list[str]] | None = None) -> Problems:
    if split is None:
        split = split_for_config(config).as_dict()
    bench = {p.name: p for p in load_benchmark(config.benchmark.root)}
    missing = [n for n in split["train"] + split["eval"] if n not in bench]
    if missing:
        raise CoralError(f"benchmark {config.benchmark.root} has no problem {missing[0]!r} "
                         "named in the run's split")
    return Problems(str(config.benchmark.root), list(split["train"]), list(split["eval"]),
                    prompts_for(config, bench, list(split["eval"])), answers_for(bench, list(split["eval"])))


def resolve_config(source: Config | str | os.PathLike, overrides: list[str] | None = None,
                   backend: str | None = None, workers: int | None = None) -> Config:
    """The config of a run: a file with its `--set` overrides, then `--backend`/`--workers`."""

    config = source if isinstance(source, Config) else load_config(source, overrides)
    if isinstance(source, Config) and overrides:
        raise CoralError("overrides apply to a config file, not to a Config object")
    update: dict[str, Any] = {}
    if backend is not None:
        update["kind"] = backend
    if workers is not None:
        update["workers"] = workers
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: a run needs at least one worker")
    if update:
        try:
            merged = BackendConfig.model_validate({**config.backend.model_dump(), **update})
        except ValidationError as exc:
            raise ConfigError(f"backend.{describe_error(exc)}") from None
        config = config.model_copy(update={"backend": merged})
    return config


def check_run(config: Config, backend: Backend) -> None:
    """What is checked before a run is registered: the backend's own limits (a local pool's
    size, Modal credentials) and, for a backend that runs here, the model folder."""
    backend.preflight(config)
    if backend.runs_here:
        check_model(config)


def check_model(config: Config) -> None:
    """Before a run is registered, one line for what would otherwise fail in a worker: a model
    given as a local path must be a model folder whose config.json parses and names its
    model_type, whose tokenizer loads (tokenizer.json through `tokenizers`, seconds cheaper than
    importing transformers), whose weight files are whole and hold every module
    genes.target_modules names, and the device must exist here. Hub ids are left to the loader. Only
    for the backends that run here (`check_run`): a Modal run's paths and devices are its containers'."""
    check_device(config.model.device)
    name = config.model.name
    check_model_folder(name)
    if not os.path.isabs(name):
        return
    _check_model_config(os.path.join(name, "config.json"))
    _check_tokenizer(name)
    from coral.model.weights import check_target_modules  # deferred: only a run's start reads weights

    # The weight files whole (a missing shard, a cut-off file) and every module genes.target_modules
    # names present in them (else: the modules the model has), read from the files' headers.
    check_target_modules(Path(name), config.genes.target_modules)


def _check_model_config(path: str) -> None:
    import json

    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ConfigError(f"{path}: no model_type (not a transformers model config)")


def _check_tokenizer(folder: str) -> None:
    fast = os.path.join(folder, "tokenizer.json")
    if os.path.isfile(fast):
        from tokenizers import Tokenizer  # deferred: only a run's start needs it

        try:
            Tokenizer.from_file(fast)
        except Exception as exc:  # the tokenizers library raises a bare Exception
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            raise ConfigError(f"{fast}: the tokenizer does not load ({first})") from None
        return
    slow = ("tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")
    if not any(os.path.isfile(os.path.join(folder, f)) for f in slow):
        raise ConfigError(f"model.name {folder}: no tokenizer in the folder (tokenizer.json or "
                          "tokenizer_config.json)")


def check_device(device: str) -> None:
    """model.device must exist on this machine ("auto" picks what does)."""
    if device in ("auto", "cpu"):
        return
    import torch  # deferred: only a GPU device needs it here

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("model.device cuda: this machine has no CUDA device (use device: cpu or auto, "
                          "or the modal backend)")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("model.device mps: this machine has no Apple MPS device (use device: cpu or auto)")


def check_run_lengths(config: Config, problems: Problems) -> None:
    """Every prompt, training pair and reference answer of the split fits its limit
    (coral.model.lengths), before the run is registered."""
    from coral.model.lengths import check_lengths  # deferred: it loads the tokenizer

    bench = {p.name: p for p in load_benchmark(config.benchmark.root)}
    check_lengths(config, bench, problems.train, problems.eval)


def run_from_config(config: Config, run_id: str | None, context: RunContext) -> RunResult:
    """Register a new run and run it to the end: the CLI's and the Modal orchestrator's entry.

    `config` is resolved (`resolve_config`); `context.backend` is the backend that serves its
    `backend.kind` (the registry, coral/services/backends.py, picks it).
    """

    home = context.home.ensure()
    run_id = run_id or new_run_id()
    problems = load_problems(config)
    check_run(config, context.backend)
    check_run_lengths(config, problems)
    register_run(home, run_id, config, {"train": problems.train, "eval": problems.eval},
                 context.bodies)
    with _driving(context, run_id):
        context.report("registered", {"run_id": run_id})
        return execute(config, run_id, problems, None, context)


def resume_run(run_id: str, context: RunContext, orphaned: bool = False,
               restarted: bool = False) -> RunResult:
    """Continue an interrupted run from its last checkpoint (crash recovery), with the job
    bodies it was registered with unless `context` names others.

    `orphaned`: the caller knows the run's orchestrator is gone although its status says it
    runs (a Modal container that crashed: its host and pid mean nothing here).
    `restarted`: this is the same life of the run going on (Modal started its preempted or
    crashed orchestrator call again), not a user's resume: a pause or stop the user asked for
    meanwhile still applies, where a resume starts with no request.
    """

    home = context.home
    config = run_config(home, run_id)
    # One driver per run: a second resume (or the live orchestrator) holds the run's lock, and
    # the state is read only once the lock is ours, so two resumes cannot both pass the check.
    with _driving(context, run_id):
        state = effective_state(read_status(home.run_dir(run_id) / "status.json"))
        if state == "finished":
            raise CoralError(f"run {run_id} already finished; nothing to resume")
        if state in ("running", "paused", "starting") and not orphaned:
            raise CoralError(f"run {run_id} is {state} (its orchestrator is alive); "
                             f"use `coral continue {run_id}` for a paused run")
        record = run_record(home, run_id)
        problems = load_problems(config, record["split"])
        context = replace(context, bodies=context.bodies.or_else(record.get("handlers")))
        checkpoint = ckpt.latest(home.checkpoints_dir(run_id))
        return execute(config, run_id, problems, checkpoint, context, keep=restarted)


def _driving(context: RunContext, run_id: str) -> AbstractContextManager[None]:
    """The run's one-orchestrator lock (`registry.orchestrating`) where the orchestrator runs
    here. Not on Modal: there the folder is the container's view of a Volume, whose commit
    fails while the container holds a file of it open, and one container's flock means nothing
    to another's; Modal itself runs one orchestrator call per run at a time."""
    return orchestrating(context.home, run_id) if context.backend.runs_here else nullcontext()


def execute(config: Config, run_id: str, problems: Problems, resume: ckpt.Checkpoint | None,
            context: RunContext, keep: bool = False) -> RunResult:
    """Run (or resume) a registered run on `context.backend` until it ends. `keep`: the run's
    pending control request still applies (resume_run's `restarted`); else it is cleared."""

    backend, home = context.backend, context.home
    started = time.time()
    with backend.open_transport(home, config) as transport:
        if keep:
            keep_requests(transport, run_id)
        else:
            clear_requests(transport, run_id)
        executor, launcher = backend.execution(transport, run_id, config, context)
        if launcher is not None:
            launcher.start()
        engine = EvolutionEngine(config, run_id, home, executor, transport, problems,
                                 threads=context.threads or default_threads(config.backend.workers),
                                 progress=context.progress)
        state = "failed"
        try:
            with _stop_on_signals(engine):
                state = engine.run(resume)
        except (TransportWriteFailed, OSError) as exc:
            # A write refused (a full disk, a size limit, an I/O error), by the run's folder or
            # by the queue database, whichever met it first: one line, not a traceback; the log
            # and checkpoints hold every finished generation.
            if isinstance(exc, OSError):
                where = f"{exc.filename}: " if exc.filename else ""
                why = f"cannot write its files ({where}{exc.strerror or exc})"
            else:
                why = str(exc)
            error = (f"run {run_id}: {why}; once that is fixed, `coral resume {run_id}` continues it "
                     "from its last checkpoint")
            _record_failure(engine, home, run_id, error)
            raise CoralError(error) from None
        except CoralError as exc:
            _record_failure(engine, home, run_id, str(exc))
            raise
        finally:
            # Leftover queued jobs of a stopped or failed run are dropped by the workers.
            try:
                set_hold(transport, run_id, None if state == "finished" else "stop")
            except CoralError as exc:  # the queue database refused the write (a full disk)
                log.warning("run %s: its jobs could not be held (%s)", run_id, exc)
            if launcher is not None:
                launcher.stop()
        pids = launcher.pids() if launcher is not None else [os.getpid()]
        return RunResult(run_id, state, time.time() - started, pids, executor.stats.retries,
                         executor.stats.lease_expiries, executor.cache_stats().hits)


def _record_failure(engine: EvolutionEngine, home: Home, run_id: str, error: str) -> None:
    """run_failed in the log and "failed" in status.json, as far as the disk lets: a run that
    failed for want of space must still end with its own error, not with this write's."""
    try:
        events = getattr(engine, "events", None)  # None: it failed opening its log
        if events is not None:
            events.emit("run_failed", {"error": error})
        write_status(home, run_id, "failed", error=error)
    except OSError as exc:
        log.warning("run %s: its failure could not be recorded (%s)", run_id, exc.strerror or exc)


@contextmanager
def _stop_on_signals(engine: EvolutionEngine) -> Iterator[None]:
    """SIGTERM and SIGINT stop the run between jobs, as `coral stop` does: the run ends
    "stopped", its pool is stopped, and `coral resume` continues it. A second signal acts as it
    would have (the process ends; its workers die with it). Signals reach only the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def stop(signum: int, frame: object) -> None:
        engine.interrupted = signal.Signals(signum).name
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    for sig in previous:
        signal.signal(sig, stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def validate_config_runs(config_path: str | os.PathLike, overrides: list[str] | None = None,
                         workers: int = 2, home: Home | None = None,
                         bodies: JobBodies = BUILTIN_BODIES,
                         progress: Callable[[str, dict], None] | None = None) -> dict[str, Any]:
    """Run one config with the serial executor and with >= 2 local workers; compare results.

    Both runs use the same torch thread count, so CPU float sums cannot differ between them.
    """

    home = (home or Home()).ensure()
    # Named as validation runs (RUN-validate-serial, -queue, -modal); nothing is registered when
    # the config cannot run here (the model, its device).
    check_model(resolve_config(config_path, overrides, "serial", max(2, workers)))
    base = f"{new_run_id()}-validate"
    threads = default_threads(workers)
    report: dict[str, Any] = {}
    for side, kind, pool in (("serial", "serial", False), ("queue", "local", True)):
        config = resolve_config(config_path, overrides, kind, max(2, workers))
        if progress is not None:
            progress("validate", {"side": side, "run_id": f"{base}-{side}"})
        result = run_from_config(config, f"{base}-{side}",
                                 RunContext(LocalBackend(pool), home, bodies, threads, progress))
        hits = misses = 0

        for event in read_events(home.events_dir(result.run_id)):
            if event.type == "generation_finished":
                hits += event.data["cache"]["hits"]
                misses += event.data["cache"]["misses"]
        report[side] = {"run_id": result.run_id, "state": result.state,
                        "wall_seconds": result.wall_seconds, "worker_pids": result.worker_pids,
                        "retries": result.retries, "lease_expiries": result.lease_expiries,
                        "cache_hit_rate": hits / (hits + misses) if hits + misses else 0.0}
    notes: list[str] = []
    report["identical"] = compare_runs(home, report["serial"]["run_id"], report["queue"]["run_id"], notes)
    report["runtime_left_out"] = {"queue": notes[0] if notes else None}
    return report
