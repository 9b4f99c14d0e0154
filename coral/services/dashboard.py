"""What the dashboard pages do, without Streamlit: launching, controlling and managing runs.

The pages (app.py, pages/) stay thin shells over these functions and over `coral.analysis`, so
everything here is testable without a browser and usable from a notebook. No Streamlit import.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from coral.benchmark.loader import PROGRAMS, read_text
from coral.config import REPO_ROOT, Config, find_configs, load_config
from coral.errors import ConfigError, CoralError
from coral.evolution.selection import OBJECTIVES
from coral.execution.jobs import BUILTIN_BODIES, EVENTS_QUEUE, job_queue
from coral.execution.jobs import JobBodies as JobBodies  # the pages' stand-in bodies (tests)
from coral.home import Home, check_run_id, new_run_id
from coral.run.control import CONTROL_REQUESTS, send_request
from coral.run.detached import log_tail, run_command, start_detached
from coral.run.reevaluation import background_state, start_background
from coral.run.registry import ACTIVE as ACTIVE  # the pages' "is it running" test
from coral.run.registry import export_adapter as export_adapter  # the Runs page's adapter export
from coral.run.registry import read_json, read_json_yaml, run_config, run_info, run_record
from coral.services.backends import config_backend, remote_backends, run_backend
from coral.services.live import preflight
from coral.services.text import visible
from coral.store.schema import METRICS as METRICS  # the objectives the pages offer

if TYPE_CHECKING:
    from coral.store.ingest import Ingestor

CONFIG_DIR = REPO_ROOT / "configs"
SMOKE_CONFIG = CONFIG_DIR / "smoke.yaml"
STAGES = ("train", "generate", "test")

# Launcher processes started by this dashboard process, so exited ones are reaped (no zombies)
# and a launch that failed before registering can be told apart from one still starting.
_LAUNCHERS: dict[str, subprocess.Popen[bytes]] = {}


# ---------------------------------------------------------------------- launching


@dataclass(frozen=True)
class LaunchRequest:
    """The launch form: a config file plus the values a researcher edits on the page, and the
    job bodies its run uses (stand-ins only under `coral dashboard --handlers`: tests launch runs
    that finish in seconds)."""

    config_path: Path
    population: int
    generations: int
    seed: int
    strategy: str
    backend: str
    workers: int
    model: str
    bodies: JobBodies = BUILTIN_BODIES

    @classmethod
    def from_config(cls, path: Path | str) -> LaunchRequest:
        """The form's starting values: what the config file says (ConfigError if it is invalid)."""
        path = Path(path).resolve()
        config = load_config(path)
        return cls(path, config.population, config.generations, config.seed, config.strategy,
                   config.backend.kind, config.backend.workers, config.model.name)

    def with_values(self, **values: Any) -> LaunchRequest:
        return replace(self, **values)

    def overrides(self) -> list[str]:
        """`--set` values for the config keys, in the CLI's KEY=VALUE form."""
        return [f"population={self.population}", f"generations={self.generations}",
                f"seed={self.seed}", f"strategy={self.strategy}", f"model.name={self.model}"]

    def validate(self) -> Config:
        """The config exactly as the run will see it; ConfigError (one line) on a bad value."""
        backend = [f"backend.kind={self.backend}", f"backend.workers={self.workers}"]
        return load_config(self.config_path, self.overrides() + backend)

    def command(self, run_id: str, modal_double: str | None = None) -> list[str]:
        """The `coral run` argument list this launch starts (never a shell string)."""
        return run_command(self.config_path, run_id, self.overrides(), self.backend, self.workers,
                           self.bodies, modal_double)


def config_files(directory: Path = CONFIG_DIR) -> list[tuple[Path, str | None]]:
    """Every config in `directory` with its one-line error (None when valid)."""
    return [(path, error) for path, _, error in find_configs(directory)]


def launch_run(request: LaunchRequest, home: Home | None = None,
               run_id: str | None = None, modal_double: str | None = None) -> str:
    """Validate, then start the run in the background (coral.run.detached, the same path as
    `coral run --detach`, with the request's job bodies) and return its run id without waiting.
    `modal_double` (a handle file, test hook) is passed on as `coral run --modal-double`.
    """
    preflight(request.validate())  # model folder, benchmark, Modal credentials: before registering
    home = (home or Home()).ensure()
    run_id = check_run_id(run_id) if run_id else new_run_id()
    _LAUNCHERS[run_id] = start_detached(home, run_id, request.command(run_id, modal_double))
    return run_id


@dataclass(frozen=True)
class LaunchState:
    state: str  # "launching", "failed to start", or the run's state once registered
    message: str


def launch_state(run_id: str, home: Home | None = None) -> LaunchState:
    """Where a launched run stands, including the launcher's own error if it never registered."""
    home = home or Home()
    folder = home.run_dir(run_id)
    proc = _LAUNCHERS.get(run_id)
    code = proc.poll() if proc is not None else None
    if (folder / "status.json").exists():
        info = run_info(home, run_id)
        return LaunchState(info.state, f"run {run_id} is {info.state}")
    log = log_tail(home, run_id)
    error = next((line for line in reversed(log) if line.startswith("coral: error:")), None)
    if error or (code is not None and code != 0):
        return LaunchState("failed to start", error or f"launcher exited with status {code}")
    if not folder.is_dir():
        raise CoralError(f"no run {run_id!r} in {home.runs}")
    return LaunchState("launching", f"run {run_id} is starting (loading the benchmark)")


def start_reevaluation(home: Home, run_ids: list[str], setting: dict[str, Any] | None = None) -> int:
    """The Compare page's button: `coral evaluate RUN_IDS` in the background with `setting` (on,
    samples, fresh: those the other chosen runs were re-evaluated with, so the rest compares with
    them), else the command's defaults; its pid. One at a time per home."""
    return start_background(home, run_ids, **(setting or {}))


def reevaluation_job(home: Home) -> dict[str, Any] | None:
    """The latest background re-evaluation of `home` (coral.run.reevaluation.background_state)."""
    return background_state(home)


# ---------------------------------------------------------------------- run control


def request_control(run_id: str, request: str, home: Home | None = None) -> str:
    """Pause, continue or stop: a request in the transport dict, as `coral pause|continue|stop`."""
    if request not in CONTROL_REQUESTS:  # before the run is looked up: the request is the error
        raise CoralError(f"unknown run control {request!r} (known: {', '.join(CONTROL_REQUESTS)})")
    home = home or Home()
    backend, config = run_backend(home, run_id)
    state = run_info(home, run_id).state if config is not None else backend.run_status(home, run_id).get("state")
    with backend.open_transport(home, config) as transport:
        return send_request(transport, run_id, str(state), request)


def start_ingestor(home: Home) -> Ingestor:
    """The store's single writer for this dashboard process, started (docs/architecture.md).
    Snapshots often: the live charts read the snapshot, so its age is most of their latency."""
    from coral.store.ingest import Ingestor  # heavy (duckdb, pyarrow): the dashboard process only

    # Runs submitted to Modal from this home are copied here as they run (coral/store/mirror.py).
    return Ingestor(home, remote=remote_backends(), snapshot_every=0.5, interval=0.25,
                    mirror_every=2.0).start()


# ---------------------------------------------------------------------- progress


def queue_depths(run_id: str, home: Home | None = None) -> dict[str, int]:
    """Jobs waiting per stage (all runs share the job queues) and this run's undrained events."""

    home = home or Home()
    config = run_config(home, run_id)
    backend = config_backend(config)
    if backend.runs_here and not home.queue_db.exists():  # nothing was ever queued here
        return {**{stage: 0 for stage in STAGES}, "events": 0}
    with backend.open_transport(home, config) as transport:
        depths = {stage: transport.queue(job_queue(stage)).len(total=True) for stage in STAGES}
        depths["events"] = transport.queue(EVENTS_QUEUE).len(partition=run_id)
    return depths


def run_error(run_id: str, home: Home | None = None) -> str | None:
    """The error a failed run recorded (a job's error text after its retries), if any."""
    home = home or Home()
    return read_json(home.run_dir(run_id) / "status.json").get("error")


def run_times(run_id: str, home: Home | None = None) -> tuple[float | None, float | None]:
    """(created, last status update) as Unix times: a run's duration is their difference."""

    home = home or Home()
    folder = home.run_dir(run_id)
    created = read_json_yaml(folder / "config.yaml").get("created")
    updated = read_json(folder / "status.json").get("updated")
    return created, updated


# ---------------------------------------------------------------------- managing runs


def delete_run(run_id: str, home: Home | None = None) -> None:
    """Remove a run's folder. An active run must be stopped first (its orchestrator writes there)."""
    home = home or Home()
    folder = home.run_dir(run_id)
    if not folder.is_dir():
        raise CoralError(f"no run {run_id!r} in {home.runs}")
    if (folder / "config.yaml").exists():
        state = run_info(home, run_id).state
        if state in ACTIVE:
            raise CoralError(f"run {run_id} is {state}; stop it before deleting it")
        run_backend(home, run_id)[0].forget_run(home, run_id)  # a Modal run's copy is not fetched again
    shutil.rmtree(folder)
    _LAUNCHERS.pop(run_id, None)


def smoke_request() -> LaunchRequest:
    """The empty state's one-click launch: configs/smoke.yaml as it is."""
    if not SMOKE_CONFIG.is_file():
        raise ConfigError(f"config file not found: {SMOKE_CONFIG}")
    return LaunchRequest.from_config(SMOKE_CONFIG)


def choices(field: str) -> list[str]:
    """The allowed values of a Literal config field ("strategy", "backend.kind"), in order."""

    model: Any = Config
    *sections, name = field.split(".")
    for section in sections:
        model = model.model_fields[section].annotation
    return list(get_args(model.model_fields[name].annotation))


def buggy_source(run_id: str, problem: str, home: Home | None = None) -> str:
    """The buggy program a run's candidates were repairing (for the diff on the genome page)."""

    home = home or Home()
    record = run_record(home, run_id)
    split = record.get("split") or {}
    if problem not in (split.get("eval") or []) + (split.get("train") or []):
        raise CoralError(f"run {run_id} has no problem {problem!r} in its split")
    root = run_config(home, run_id).benchmark.root
    return read_text(Path(root) / PROGRAMS / f"{problem}.py")


def candidate_diff(run_id: str, problem: str, candidate: str | None, home: Home | None = None) -> str:
    """A generated fix as a unified diff against the buggy program, for a code block: control and
    bidirectional-override characters the model wrote are shown as escapes (coral.services.text),
    so the code reads as what it is."""
    buggy = buggy_source(run_id, problem, home)
    diff = "".join(difflib.unified_diff(buggy.splitlines(keepends=True),
                                        (candidate or "").splitlines(keepends=True),
                                        fromfile=f"{problem} (buggy)", tofile="generated fix"))
    return visible(diff) if diff else "(identical to the buggy program)"


# ---------------------------------------------------------------------- exports


def best_genome(run_id: str, home: Home | None = None) -> dict[str, Any]:
    """The run's best genome by the one definition (coral.analysis.best): the highest mean fitness
    over a genome's evaluations, among those evaluated at least twice when the run has any (those
    evaluated in its latest generation first); {genome_id, fitness, evaluations, se, generation}."""
    from coral.analysis.best import best_genome as best  # heavy (duckdb, pandas): when the store is read

    return best(run_id, home or Home())


EXPORT_TABLES = ("run", "generations", "scores", "genomes", "evaluations", "baseline")


def export_parquet(run_id: str, out: Path | str | None = None, home: Home | None = None) -> Path:
    """One Parquet file per table of the run (coral.analysis.load_run), written aside and renamed
    into place, so a reader never sees half a folder. Default: CORAL_HOME/exports/RUN_ID/parquet."""

    import pandas as pd  # heavy (pandas): only for an export

    from coral.analysis import load_run  # heavy (duckdb, pandas): imported when the store is read

    home = home or Home()
    target = Path(out) if out is not None else home.root / "exports" / run_id / "parquet"
    data = load_run(run_id, home)
    frames = {"run": pd.DataFrame([data.run]), "generations": data.generations,
              "scores": data.scores, "genomes": data.genomes, "evaluations": data.evaluations,
              "baseline": pd.DataFrame([data.baseline] if data.baseline else [])}
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name in EXPORT_TABLES:
            frame = frames[name]
            if name == "baseline" and "problems" in frame:
                frame = frame.assign(problems=frame["problems"].map(json_text))
            frame.to_parquet(temp / f"{name}.parquet", index=False)
        if target.exists():
            shutil.rmtree(target)  # an earlier export of the same run: replaced whole
        os.rename(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return target


def json_text(value: Any) -> str:

    return json.dumps(value, sort_keys=True)


# ---------------------------------------------------------------------- the genome table


# The objectives' columns follow the declared objective set (docs/objectives.md).
GENOME_COLUMNS = ("genome_id", "fitness", "evaluations", *OBJECTIVES,
                  "fixed_at_k", "survived", "rank", "alpha", "dropout", "adapter_type",
                  "target_modules", "temperature", "top_p", "top_k", "repetition_penalty",
                  "max_new_tokens", "origin")


def scored_generations(run_id: str, home: Home | None = None) -> list[int]:
    """Generations of a run that have scores in the store, ascending."""
    from coral.analysis import connect  # heavy (duckdb, pandas): imported when the store is read

    with connect(home or Home()) as con:
        rows = con.execute("SELECT DISTINCT generation FROM scores WHERE run_id = ? "
                           "ORDER BY generation", [run_id]).fetchall()
    return [int(r[0]) for r in rows]


def genome_table(run_id: str, generation: int, home: Home | None = None) -> Any:
    """One generation's genomes: scores with heavy genes and knobs, best fitness first.

    One small query instead of `analysis.load_run`, which would pull every evaluation row.
    """
    from coral.analysis import connect  # heavy (duckdb, pandas): imported when the store is read

    with connect(home or Home()) as con:
        frame = con.execute(
            "SELECT * EXCLUDE (run_id, generation, seq) FROM scores s "
            "LEFT JOIN (SELECT * EXCLUDE (run_id, generation) FROM genomes WHERE run_id = $1) g "
            "USING (genome_id) WHERE s.run_id = $1 AND s.generation = $2 "
            "ORDER BY fitness DESC, genome_id", [run_id, generation]).df()
    return frame[[c for c in GENOME_COLUMNS if c in frame]]
