"""Typed run configuration: YAML in, validated pydantic models out.

Rules: every key is read by some part of CORAL or it does not exist (extra keys are rejected);
wrong types and out-of-range values fail before any work starts, with one line naming the key;
paths written inside a config resolve relative to the config file.
"""

from __future__ import annotations

import os
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from coral.errors import ConfigError


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        return (Path(base) / value).resolve()
    return value


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]


def _check_range(value: tuple[float, float]) -> tuple[float, float]:
    if value[0] > value[1]:
        raise ValueError(f"range [{value[0]}, {value[1]}] has low > high")
    return value


REPO_ROOT = Path(__file__).resolve().parents[1]


def _resolve_model_name(value: str, info: ValidationInfo) -> str:
    """A local path ('./x', '../x', '/x', '~/x') resolves like other paths; else a hub id."""
    if value.startswith((".", "/", "~")):
        return str(_resolve_path(Path(value).expanduser(), info))
    return value


ModelName = Annotated[str, AfterValidator(_resolve_model_name)]

FloatRange = Annotated[tuple[float, float], AfterValidator(_check_range)]
IntRange = Annotated[tuple[int, int], AfterValidator(_check_range)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CAConfig(Section):
    """The cellular automaton each genome seeds (docs/ca.md)."""

    width: int = Field(default=16, ge=4, le=128)
    height: int = Field(default=16, ge=4, le=128)
    steps: IntRange = (24, 48)  # a seed's step count is drawn from this range
    density: float = Field(default=0.35, gt=0.0, lt=1.0)  # live fraction of random initial grids


class GeneSpace(Section):
    """Candidate values for the heavy genes; the CA features choose among them."""

    ranks: list[Annotated[int, Field(ge=1, le=1024)]] = Field(default=[2, 4, 8, 16], min_length=1)
    alphas: list[Annotated[int, Field(ge=1, le=4096)]] = Field(default=[4, 8, 16, 32], min_length=1)
    # A few levels, not a range: equal heavy genes then recur and share one adapter (a
    # continuous dropout made nearly every adapter unique: 3 cache hits in 40).
    dropout: list[Annotated[float, Field(ge=0.0, lt=1.0)]] = Field(
        default=[0.0, 0.05, 0.1], min_length=1
    )
    target_modules: list[list[str]] = Field(
        default=[["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj"]], min_length=1
    )
    adapter_types: list[Literal["lora", "dora"]] = Field(default=["lora", "dora"], min_length=1)

    @model_validator(mode="after")
    def _non_empty_module_sets(self) -> GeneSpace:
        for modules in self.target_modules:
            if not modules:
                raise ValueError("genes.target_modules: every module set needs at least one module")
        return self


class KnobSpace(Section):
    """Ranges for the cheap generation knobs."""

    temperature: FloatRange = (0.2, 1.0)
    top_p: FloatRange = (0.8, 1.0)
    top_k: IntRange = (10, 100)
    repetition_penalty: FloatRange = (1.0, 1.3)
    max_new_tokens: list[Annotated[int, Field(ge=1, le=8192)]] = Field(
        default=[128, 256], min_length=1
    )

    @model_validator(mode="after")
    def _bounds(self) -> KnobSpace:
        if self.temperature[0] <= 0 or self.temperature[1] > 5:
            raise ValueError("knobs.temperature: must lie in (0, 5]")
        if self.top_p[0] <= 0 or self.top_p[1] > 1:
            raise ValueError("knobs.top_p: must lie in (0, 1]")
        if self.top_k[0] < 1:
            raise ValueError("knobs.top_k: must be at least 1")
        if self.repetition_penalty[0] < 1.0 or self.repetition_penalty[1] > 3.0:
            raise ValueError("knobs.repetition_penalty: must lie in [1, 3]")
        return self


class GateConfig(Section):
    """Threshold gate: genomes whose weighted fitness is below the schedule cannot survive."""

    schedule: Literal["none", "linear", "sigmoid"] = "sigmoid"
    start: float = Field(default=0.0, ge=0.0, le=1.0)
    end: float = Field(default=0.2, ge=0.0, le=1.0)
    steepness: float = Field(default=10.0, gt=0.0)  # sigmoid only
    min_survivors: int = Field(default=2, ge=1)  # the best are kept even if below the gate


class EvolutionConfig(Section):
    crossover_rate: float = Field(default=0.9, ge=0.0, le=1.0)
    mutation_rate: float = Field(default=0.5, ge=0.0, le=1.0)
    ca_mutation_share: float = Field(default=0.5, ge=0.0, le=1.0)  # CA-level vs gene-level
    cell_flip_rate: float = Field(default=0.05, gt=0.0, le=0.5)  # CA-level: share of cells flipped
    tournament_size: int = Field(default=2, ge=2, le=16)
    # The last N of `generations` breed nothing: they evaluate the survivors again on fresh
    # sampling seeds, so the run's best is chosen on several evaluations, not on one lucky draw
    # (docs/engine.md, "Final rounds"). Any strategy; 0 = every generation breeds.
    final_rounds: int = Field(default=0, ge=0)
    gate: GateConfig = GateConfig()


class ObjectiveWeights(Section):
    """Weights of the fitness scalar; NSGA-II ranks on the positive-weight objectives, so weight
    0 retires an objective from selection (docs/config.md)."""

    bugfix: float = Field(default=1.0, ge=0.0)
    style: float = Field(default=0.1, ge=0.0)
    security: float = Field(default=0.1, ge=0.0)
    runtime: float = Field(default=0.1, ge=0.0)
    syntax: float = Field(default=0.2, ge=0.0)
    # Computed by the model, not the sandbox: the chance that `fix_chance_k` answers at the
    # genome's knobs include the reference fix (docs/objectives.md, "fix_chance").
    fix_chance: float = Field(default=0.0, ge=0.0)

    @model_validator(mode="after")
    def _some_weight(self) -> ObjectiveWeights:
        if sum(self.model_dump().values()) <= 0:
            raise ValueError("objectives.weights: at least one weight must be positive")
        return self


class ObjectivesConfig(Section):
    weights: ObjectiveWeights = ObjectiveWeights()
    fix_chance_k: int = Field(default=5, ge=1, le=1000)  # answers a user draws per problem


class BenchmarkConfig(Section):
    """Which problems, how the split is read, and how many samples each genome draws."""

    root: ConfigPath = REPO_ROOT / "data" / "problems"
    split: ConfigPath | None = None  # default: ROOT/split.json
    samples: int = Field(default=2, ge=1, le=64)  # k in fixed@k
    prompt_style: Literal["base", "instruct"] = "base"


class ModelConfig(Section):
    name: ModelName = str(REPO_ROOT / "data" / "models" / "tiny-code")
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class TrainingConfig(Section):
    # What adapters learn from (docs/model.md "Training data"): the train side's instances, or
    # up to 4 mutants per bug class of each train-side program (no eval family either way;
    # measured no dependable gain, so not the default).
    data: Literal["instances", "program-mutants"] = "instances"
    steps: int = Field(default=80, ge=1)  # ~1 epoch of the 290 train-side instances at batch 4
    learning_rate: float = Field(default=1e-3, gt=0.0, le=1.0)
    batch_size: int = Field(default=4, ge=1)
    max_length: int = Field(default=1024, ge=16)  # prompt + answer; QuixBugs' longest pair fits


class GenerationConfig(Section):
    batch_size: int = Field(default=64, ge=1)  # rows per forward pass within one genome's call
    max_prompt_length: int = Field(default=1024, ge=16)  # QuixBugs' longest prompt is 545 tokens


class SandboxConfig(Section):
    cpu_seconds: float = Field(default=10.0, gt=0)
    wall_seconds: float = Field(default=30.0, gt=0)
    memory_mb: int = Field(default=1024, ge=64)
    # RLIMIT_NPROC of each box: a bound, so no config value lets a candidate fork without limit
    max_processes: int = Field(default=32, ge=1, le=1024)
    max_file_mb: int = Field(default=16, ge=1)
    max_output_bytes: int = Field(default=1_000_000, ge=1024)
    # Per-case budget of counted work (docs/sandbox.md "Cost"): budget_factor x the reference
    # fix's cost of that case, within [budget_floor, budget_ceiling] CPU-seconds. The ceiling
    # is also the reference's own budget: a reference slower than that is unsound.
    budget_factor: float = Field(default=10.0, ge=1.0)
    budget_floor: float = Field(default=0.05, gt=0)
    budget_ceiling: float = Field(default=20.0, gt=0)
    # How a candidate's work is counted (docs/sandbox.md "Meters"): "auto" uses the CPU's
    # instruction counter where there is one, else the task clock, else CPU time; "task-clock"
    # or "cpu-time" pin the coarser meter a Modal worker has, so local and Modal runs compare.
    meter: Literal["auto", "task-clock", "cpu-time"] = "auto"


class BackendConfig(Section):
    """Where jobs run (docs/transport.md). serial: in-process, for debugging."""

    kind: Literal["local", "modal", "serial"] = "local"
    workers: int = Field(default=2, ge=1, le=1024)
    # A worker renews its job's lease every lease_seconds/3; a lease not renewed for
    # lease_seconds means the worker died and the job is re-enqueued. Also the adapter claim ttl.
    lease_seconds: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=2, ge=0)  # extra attempts after a failure or a lost worker
    # How long dispatch may find no room in a job queue (nothing accepted, nothing finishing)
    # before the run fails: its workers are gone or another run holds the queue.
    submit_timeout: float = Field(default=300.0, gt=0)
    # Jobs of one run in the transport at once (queued, running or answered but not yet read),
    # across stages; the rest wait in the executor. Below Modal's 5,000-item partition cap, so
    # neither a job partition nor the run's results partition can fill (docs/transport.md).
    window: int = Field(default=2000, ge=1, le=4000)


class ModalConfig(Section):
    """Where and how the modal backend runs (docs/modal.md). Read by coral/modal/app.py at
    deploy time and by the modal launcher at run time."""

    # Queues are named APP-jobs-generate etc.; Modal names are at most 64 characters.
    app_name: str = Field(default="coral", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
    volume: str = Field(default="coral-home", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    # The Hugging Face cache, on a Volume of its own: a loaded model keeps its weight files
    # mapped, and a Volume cannot be reloaded with files open (docs/modal.md, "Volume sync").
    models_volume: str = Field(default="coral-models",
                               pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    # Modal GPU strings: "H100", "A100-80GB", "L40S", "H100:2" (count), "H100!" (no upgrade).
    gpu_train: str = Field(default="H100", pattern=r"^[A-Za-z0-9-]+!?(:[1-8])?$")
    gpu_generate: str = Field(default="H100", pattern=r"^[A-Za-z0-9-]+!?(:[1-8])?$")
    timeout_train: int = Field(default=3600, ge=10, le=86400)  # Modal allows up to 24 h
    timeout_generate: int = Field(default=1800, ge=10, le=86400)
    timeout_test: int = Field(default=600, ge=10, le=86400)
    timeout_run: int = Field(default=86400, ge=60, le=86400)  # the orchestrator: a whole run
    retries: int = Field(default=1, ge=0, le=10)
    # Cost controls (docs/modal.md, "What a run costs"): GPU containers per worker class, CPU
    # containers for tests, and how long an idle worker waits for a job before it exits.
    max_containers: int = Field(default=8, ge=1, le=1000)  # per GPU worker class
    max_containers_test: int = Field(default=16, ge=1, le=1000)  # test workers, and evaluate
    idle_seconds: int = Field(default=60, ge=2, le=3600)  # Modal's scaledown_window range
    # A worker group whose calls fail this many times in a row before taking a job fails the run.
    max_start_failures: int = Field(default=3, ge=1, le=100)
    # Modal retries of a crashed orchestrator; each resumes the run from its last checkpoint.
    orchestrator_retries: int = Field(default=2, ge=0, le=10)
    # Modal secrets for the GPU workers and the orchestrator (never the sandboxed test worker),
    # e.g. ["huggingface"] after `modal secret create huggingface HF_TOKEN=...`.
    secrets: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]] = []


class Config(Section):
    """A whole run. Sections are documented in docs/config.md."""

    seed: int = Field(default=0, ge=0, lt=2**63)
    population: int = Field(default=8, ge=2, le=4096)
    generations: int = Field(default=3, ge=1, le=10_000)
    strategy: Literal["evolution", "random", "grid"] = "evolution"
    ca: CAConfig = CAConfig()
    genes: GeneSpace = GeneSpace()
    knobs: KnobSpace = KnobSpace()
    evolution: EvolutionConfig = EvolutionConfig()
    objectives: ObjectivesConfig = ObjectivesConfig()
    benchmark: BenchmarkConfig = BenchmarkConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    generation: GenerationConfig = GenerationConfig()
    sandbox: SandboxConfig = SandboxConfig()
    backend: BackendConfig = BackendConfig()
    modal: ModalConfig = ModalConfig()

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        if self.ca.steps[0] < 1:
            raise ValueError("ca.steps: at least 1 step")
        if self.evolution.final_rounds >= self.generations:
            raise ValueError(f"evolution.final_rounds: {self.evolution.final_rounds} leaves no generation to "
                             f"search in (generations is {self.generations} and the final rounds are part of "
                             f"them): raise generations or lower evolution.final_rounds, e.g. --set "
                             f"evolution.final_rounds={self.generations - 1}")
        return self


# ---------------------------------------------------------------- loading and overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """'a.b=v' -> (['a', 'b'], v) with v parsed as a YAML scalar ('3' -> 3, 'true' -> True)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set evolution.mutation_rate=0.3")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except BadYaml as exc:
        raise ConfigError(f"--set {key}: value {_SHORT.repr(raw)} is not valid YAML ({exc.problem})") from None
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {'.'.join(parts)}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong, in one line: only a MarkedYAMLError has `problem` (a ReaderError, for a
    control character, has not, and its text runs over several lines)."""
    problem = getattr(exc, "problem", None)
    return str(problem) if problem else (str(exc).splitlines() or [type(exc).__name__])[0]


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    if not path.is_file():
        raise ConfigError(f"config path is not a file: {path}")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except BadYaml as exc:
        where = f" line {exc.line}" if exc.line else ""
        raise ConfigError(f"{path}:{where} is not valid YAML: {exc.problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(data).__name__}")
    return data


class BadYaml(Exception):
    def __init__(self, problem: str, line: int | None = None) -> None:
        super().__init__(problem)
        self.problem, self.line = problem, line


# Aliases repeat what they point to: nine of nine of ... nine is 387 million values in a
# 1 KB file, which validation would walk for hours. Counting stops at the limit.
MAX_CONFIG_VALUES = 100_000


def load_yaml(text: str) -> Any:
    """yaml.safe_load; any failure is BadYaml with one line (and the line number if known)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise BadYaml(_yaml_problem(exc), mark.line + 1 if mark else None) from None
    except RecursionError:
        raise BadYaml("nested too deeply") from None
    except ValueError as exc:  # an integer past Python's str -> int digit limit
        raise BadYaml(str(exc).split(":")[0]) from None
    if _values_past(data, MAX_CONFIG_VALUES):
        raise BadYaml(f"more than {MAX_CONFIG_VALUES:,} values once aliases are expanded "
                      "(a config has a few hundred)")
    return data


def _values_past(data: object, limit: int) -> bool:
    """Whether `data` holds more than `limit` values, aliases counted each time they occur."""
    stack, seen = [data], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > limit:
            return True
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list | tuple | set):
            stack.extend(node)
    return False


def validate_config(data: dict[str, Any], base_dir: Path, source: str = "config") -> Config:
    try:
        return Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_error(exc)}") from None


def load_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> Config:
    """Read, override and validate a config; raise ConfigError with one clear line on bad input."""
    path = Path(path)
    data = apply_overrides(read_yaml(path), overrides or [])
    return validate_config(data, base_dir=path.resolve().parent, source=str(path))


def describe_error(exc: ValidationError) -> str:
    """The first problem, as 'key.path: what is wrong (what is allowed)'."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        return f"unknown key '{key}' (allowed here: {', '.join(allowed)})"
    msg = err["msg"].removeprefix("Value error, ")
    if msg.startswith(f"{key}:") or (loc and msg.startswith(loc[0])):
        return msg
    return f"{key}: {msg} (got {_SHORT.repr(err['input'])})" if "input" in err else f"{key}: {msg}"


def _short_repr() -> reprlib.Repr:
    """What a message quotes of a bad value: a few levels, items and characters, never all of it."""
    short = reprlib.Repr()  # Python 3.11's takes no keyword arguments
    short.maxlevel, short.maxstring, short.maxother = 3, 80, 80
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 6
    return short


_SHORT = _short_repr()


def _allowed_keys(section_path: list[str]) -> list[str]:
    model: Any = Config
    for part in section_path:
        field = model.model_fields.get(part)
        if field is None or not isinstance(field.annotation, type) or not issubclass(
            field.annotation, BaseModel
        ):
            return []
        model = field.annotation
    return sorted(model.model_fields)


def config_to_dict(config: Config) -> dict[str, Any]:
    """JSON-compatible dict (paths as strings, tuples as lists): what `config show` prints."""
    return config.model_dump(mode="json")


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def find_configs(directory: Path) -> list[tuple[Path, Config | None, str | None]]:
    """Every *.yaml in a folder with its validated config, or the one-line error."""
    found: list[tuple[Path, Config | None, str | None]] = []
    for path in sorted(Path(directory).glob("*.yaml")):
        try:
            found.append((path, load_config(path), None))
        except ConfigError as exc:
            found.append((path, None, str(exc)))
    return found


def check_model_folder(name: str) -> None:
    """A model named by an absolute path must be a saved model folder (config.json in it), else one
    ConfigError line; hub ids (and the paths a remote backend resolves) are left to the loader. The
    one model-folder check: `coral run` and the dashboard's launch both ask it before registering."""
    if not os.path.isabs(name):
        return
    if not os.path.isdir(name):
        raise ConfigError(f"model folder not found: {name} (model.name takes a hub id or a local folder)")
    if not os.path.isfile(os.path.join(name, "config.json")):
        raise ConfigError(f"model.name {name}: not a model folder (no config.json in it)")
