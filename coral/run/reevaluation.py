"""A run's pick evaluated again on fresh sampling seeds: `coral evaluate` (docs/engine.md, "Held-out
re-evaluation").

A run's recorded fitness is the winner of a noisy tournament: the genome it picks was selected
*because* its evaluations were lucky. What a researcher can claim is the pick's score on sampling
seeds no generation used, on instances selection never saw, beside the untuned model on the same
seeds and instances. This module computes that and writes it into the run's folder,
`runs/RUN_ID/reevaluations/GENOME.ON.kK.xN.json`; the ingestor stores it (table `reevaluations`),
and coral.analysis.reevaluated groups it by replicate group for the Compare page.

The fresh seeds derive from the run's seed alone (`fresh_seeds`): two runs of one seed (an
evolution run and a random-search run) are scored on the same sampled answers of the untuned
model, so their differences pair by seed and by instance.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess  # nosec B404 - an argument list, never a shell
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from coral.benchmark.loader import load_benchmark
from coral.benchmark.problem import Problem
from coral.benchmark.split import load_split
from coral.config import Config
from coral.errors import CoralError
from coral.evolution.genome import Knobs
from coral.hashing import content_hash
from coral.home import Home
from coral.rng import stream_seed
from coral.run.checkpoints import write_atomic
from coral.run.evaluate import default_knobs, evaluate_problems
from coral.run.registry import json_problem, pid_alive, run_config, run_record, trained_adapter

FOLDER = "reevaluations"
VERSION: Literal[1] = 1
EvaluatedOn = Literal["held-out", "run"]
ON_CHOICES: tuple[str, ...] = ("held-out", "run")
MEASURES = ("fixed_at_k", "bugfix", "syntax", "fix_chance")


class Scores(BaseModel):
    """One model's results on the instances, averaged over the fresh seeds. `solved[i]`: the share
    of seeds on which instance i was fixed by one of its k answers (what pairs by instance)."""

    model_config = ConfigDict(extra="forbid")
    fixed_at_k: float = Field(ge=0, le=1)
    bugfix: float = Field(ge=0, le=1)
    syntax: float = Field(ge=0, le=1)
    fix_chance: float = Field(ge=0, le=1)
    per_seed_fixed_at_k: list[float]
    solved: list[float]


class Reevaluation(BaseModel):
    """The file `coral evaluate` writes (and the ingestor reads) for one pick of one run."""

    model_config = ConfigDict(extra="forbid")
    version: Literal[1]
    run_id: str
    run_seed: int
    genome_id: str
    pick_fitness: float  # its mean fitness over its evaluations in the run (coral.analysis.best)
    pick_evaluations: int
    on: EvaluatedOn
    instances: list[str]
    withheld: list[str]  # those of the bug classes the base model's build withheld
    samples: int = Field(ge=1)
    seeds: list[int]
    adapter: str  # the adapter's cache key (CORAL_HOME/adapters/KEY)
    knobs: dict[str, Any]
    baseline_knobs: dict[str, Any]
    model: Scores
    baseline: Scores  # the base model without adapter, default knobs, the same seeds
    created: float
    wall_seconds: float

    @model_validator(mode="after")
    def _lengths_agree(self) -> Reevaluation:
        for who, scores in (("model", self.model), ("baseline", self.baseline)):
            if len(scores.solved) != len(self.instances):
                raise ValueError(f"{who}.solved has {len(scores.solved)} values for {len(self.instances)} instances")
            if len(scores.per_seed_fixed_at_k) != len(self.seeds):
                raise ValueError(f"{who}.per_seed_fixed_at_k has {len(scores.per_seed_fixed_at_k)} values "
                                 f"for {len(self.seeds)} seeds")
        stray = sorted(set(self.withheld) - set(self.instances))
        if stray:
            raise ValueError(f"withheld instance {stray[0]!r} is not among the instances")
        return self


def fresh_seeds(run_seed: int, count: int) -> list[int]:
    """Sampling seeds no generation of the run used (generations draw theirs from another purpose).
    The purpose name is bench/evolution_signal.py's, whose recorded figures these reproduce."""
    return [stream_seed(run_seed, None, None, f"signal-fresh-{i}") % (2**63 - 1) for i in range(count)]


def file_name(genome_id: str, on: str, samples: int, fresh: int) -> str:
    return f"{genome_id}.{on}.k{samples}.x{fresh}.json"


def reevaluate(home: Home, run_id: str, pick: dict[str, Any], *, fresh: int = 2, samples: int = 5,
               on: str = "held-out", log: Callable[[str], None] | None = None, base: Any = None) -> Path:
    """Evaluate `pick` (coral.analysis.best.best_genome's dict) of `run_id` with the adapter the run
    trained for it, and the untuned model, on `fresh` fresh seeds x `samples` answers per instance;
    write the result into the run's folder and return its path. `base`: the run's model, loaded."""
    from coral.model.loading import load_base_model
    from coral.model.tiny import withheld_classes

    if on not in ON_CHOICES:
        raise CoralError(f"evaluate on must be one of {', '.join(ON_CHOICES)}, got {on!r}")
    if fresh < 1 or samples < 1:
        raise CoralError(f"fresh seeds and samples must be at least 1 (got {fresh} and {samples})")
    started = time.perf_counter()
    say = log or (lambda _line: None)
    config = run_config(home, run_id)
    genome, adapter = trained_adapter(run_id, pick["genome_id"], home)
    root = config.benchmark.root
    names = (load_split(root).eval if on == "held-out"
             else list((run_record(home, run_id).get("split") or {}).get("eval") or []))
    by_name = {p.name: p for p in load_benchmark(root)}
    missing = [n for n in names if n not in by_name]
    if missing or not names:
        raise CoralError(f"run {run_id}: {'instance ' + repr(missing[0]) if missing else 'no eval instances'} "
                         f"not in its benchmark {root}")
    problems = [by_name[n] for n in names]
    withheld = _withheld(root, names, withheld_classes(config.model.name))
    seeds = fresh_seeds(config.seed, fresh)
    base = base if base is not None else load_base_model(config.model)
    baseline_knobs = default_knobs(config.knobs)

    def scores(adapter_dir: Path | None, knobs: Any, who: str) -> Scores:
        cache = None
        if adapter_dir is None:  # the untuned model's answers: the same for every run of this seed
            cache = baseline_cache(home, base.fingerprint, config, problems, knobs, seeds, samples)
            if cache.is_file():
                try:
                    cached = Scores.model_validate_json(cache.read_text(encoding="utf-8"))
                    say(f"{run_id}: no adapter on these seeds and instances: evaluated before ({cache.name})")
                    return cached
                except (ValidationError, OSError, ValueError):  # a cache: evaluate again and replace it
                    say(f"{run_id}: {cache} is unreadable; evaluating the untuned model again")
        runs = []
        for index, seed in enumerate(seeds):
            say(f"{run_id}: {who}, fresh seed {index + 1}/{fresh}")
            runs.append(evaluate_problems(problems, root, config, adapter=adapter_dir, samples=samples,
                                          seed=seed, knobs=knobs, base=base,
                                          log=lambda line: say(f"{run_id}: {line}")))
        out = Scores(
            **{m: sum(r[m] for r in runs) / fresh for m in MEASURES},
            per_seed_fixed_at_k=[r["fixed_at_k"] for r in runs],
            solved=[sum(r["problems"][i]["fixed"] for r in runs) / fresh for i in range(len(problems))])
        if cache is not None:
            write_atomic(cache, out.model_dump_json() + "\n")
        return out

    result = Reevaluation(
        version=VERSION, run_id=run_id, run_seed=config.seed, genome_id=genome.id,
        pick_fitness=float(pick["fitness"]), pick_evaluations=int(pick["evaluations"]), on=on,  # type: ignore[arg-type]
        instances=names, withheld=withheld, samples=samples, seeds=seeds, adapter=adapter.name,
        knobs=genome.knobs.model_dump(mode="json"), baseline_knobs=baseline_knobs.model_dump(mode="json"),
        model=scores(adapter, genome.knobs, f"genome {genome.id}"),
        baseline=scores(None, baseline_knobs, "no adapter"),
        created=time.time(), wall_seconds=0.0)
    result.wall_seconds = round(time.perf_counter() - started, 3)
    path = home.run_dir(run_id) / FOLDER / file_name(genome.id, on, samples, fresh)
    write_atomic(path, result.model_dump_json(indent=1) + "\n")
    return path


def baseline_cache(home: Home, fingerprint: str, config: Config, problems: list[Problem], knobs: Knobs,
                   seeds: list[int], samples: int) -> Path:
    """Where the untuned model's scores on these instances and seeds are kept: keyed by everything
    they depend on (weights, knobs, generation and sandbox settings, prompt style, the instances'
    sources), so runs of one seed (evolution, random search) compute them once."""
    key = content_hash({
        "model": fingerprint, "knobs": knobs.model_dump(mode="json"), "seeds": seeds, "samples": samples,
        "generation": config.generation.model_dump(mode="json"), "sandbox": config.sandbox.model_dump(mode="json"),
        "fix_chance_k": config.objectives.fix_chance_k, "prompt_style": config.benchmark.prompt_style,
        # a Problem's repr holds its name, sources, test cases and support files
        "instances": [hashlib.sha256(repr(p).encode()).hexdigest() for p in problems]}, length=24)
    return home.root / FOLDER / f"baseline-{key}.json"


def _withheld(root: Path, names: list[str], classes: list[str]) -> list[str]:
    """The instances among `names` of the classes the model withheld ([] on a benchmark without
    those classes: nothing there to tell apart)."""
    from coral.run.evaluate import instances_of

    if not classes:
        return []
    try:
        return sorted(set(names) & instances_of(root, classes))
    except CoralError:
        return []


def read_reevaluation(path: Path) -> Reevaluation:
    """One re-evaluation file; one line naming the file and what is wrong with it."""
    try:
        text = path.read_text(encoding="utf-8")
        return Reevaluation.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the file"
        if first["type"] == "json_invalid":
            raise CoralError(f"{path}: not a re-evaluation (invalid JSON: {first['msg']})") from None
        raise CoralError(f"{path}: not a re-evaluation ({where}: {first['msg']})") from None
    except (ValueError, RecursionError) as exc:
        raise CoralError(f"{path}: not a re-evaluation ({json_problem(exc)})") from None
    except OSError as exc:
        raise CoralError(f"{path}: unreadable ({exc.strerror or exc})") from None


def reevaluation_files(home: Home, run_id: str) -> list[Path]:
    folder = home.run_dir(run_id) / FOLDER
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))


# ---------------------------------------------------------------------- in the background

BACKGROUND_STATE = "evaluating.json"  # CORAL_HOME/reevaluations/: the one background re-evaluation
BACKGROUND_LOG = "evaluate.log"
# Children started by this process, so an exited one is reaped (no zombie that looks alive).
_STARTED: dict[int, subprocess.Popen[bytes]] = {}


def start_background(home: Home, run_ids: list[str], *, fresh: int = 2, samples: int = 5,
                     on: str = "held-out") -> int:
    """Start `coral evaluate RUN_IDS ...` detached (an argument list, its own session; output to
    CORAL_HOME/reevaluations/evaluate.log) and return its pid. One at a time per home: a second
    start while one runs is an error naming it (each loads the model and runs sandboxes)."""
    from coral.config import REPO_ROOT
    from coral.home import check_run_id

    if not run_ids:
        raise CoralError("no run to re-evaluate")
    current = background_state(home)
    if current is not None and current["running"]:
        raise CoralError(f"a re-evaluation is already running (process {current['pid']}: "
                         f"{', '.join(current['runs'])}); one at a time")
    command = [sys.executable, "-m", "coral", "evaluate", *(check_run_id(r) for r in run_ids),
               "--fresh", str(int(fresh)), "--samples", str(int(samples)), "--on", on]
    folder = home.ensure().root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / BACKGROUND_LOG, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=REPO_ROOT, env={**os.environ, "CORAL_HOME": str(home.root)})
    _STARTED[proc.pid] = proc
    write_atomic(folder / BACKGROUND_STATE, json.dumps({
        "pid": proc.pid, "host": socket.gethostname(), "runs": list(run_ids), "started": time.time(),
        "fresh": fresh, "samples": samples, "on": on}) + "\n")
    return proc.pid


def background_state(home: Home) -> dict[str, Any] | None:
    """The latest background re-evaluation of this home: pid, runs, started, running (its process
    is alive), last (its latest progress line) and error (its `coral: error:` line, once it
    failed); None when none was started."""
    from coral.run.registry import read_json

    folder = home.root / FOLDER
    state = read_json(folder / BACKGROUND_STATE)
    if not isinstance(state.get("pid"), int):
        return None
    pid = state["pid"]
    proc = _STARTED.get(pid)
    if proc is not None:
        running = proc.poll() is None
    else:
        running = state.get("host") == socket.gethostname() and pid_alive(pid)
    try:
        text = (folder / BACKGROUND_LOG).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    lines = [line.strip() for chunk in text.splitlines() for line in chunk.split("\r") if line.strip()]
    error = next((line for line in reversed(lines) if line.startswith("coral: error:")), None)
    exited = proc.returncode if proc is not None else None
    if error is None and not running and exited not in (None, 0):
        error = f"coral evaluate exited with status {exited}"
    progress = [line for line in lines if line.startswith("coral evaluate: ")]
    return {"pid": pid, "runs": [str(r) for r in state.get("runs") or []], "started": state.get("started"),
            "running": running, "last": progress[-1].removeprefix("coral evaluate: ") if progress else None,
            "error": error}

