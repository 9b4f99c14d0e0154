"""What each job kind carries: its payload (the body's input) and its output, as frozen models.

A Job's `payload` and a JobResult's `output` travel as JSON objects inside the envelope
(coral.execution.messages). They are read and written only through this module: the engine
builds a payload model and submits it with `job_for`; a body reads its input with `payload_of`
and returns an output model; the engine reads a result's output with `output_of`. Each of these
validates once, against the kind's model, so a message that does not fit is one MessageError
naming the job (id and kind) and the field. Echo is schema-free by design (it returns what it is
given: health checks and transport benchmarks), so it has no models here.

The objective set is declared once, by the fields of coral.config.ObjectiveWeights (re-exported
as coral.evolution.selection.CANDIDATE_OBJECTIVES): a test output must carry exactly those objectives.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from coral.benchmark.prompts import PromptStyle
from coral.config import GenerationConfig, ModelConfig, SandboxConfig, TrainingConfig
from coral.errors import MessageError
from coral.evolution.genome import HeavyGenes, Knobs
from coral.evolution.selection import CANDIDATE_OBJECTIVES
from coral.execution.messages import Job, JobKind, JobResult


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------ payloads


class ModelPayload(Contract):
    """What every job that loads the base model carries."""

    model: ModelConfig
    # Torch threads: travels with the job because CPU float sums depend on it, not on who runs it.
    threads: int | None = Field(default=None, ge=1)


class TrainPayload(ModelPayload):
    training: TrainingConfig
    genes: HeavyGenes
    benchmark_root: str
    train_problems: list[str]
    prompt_style: PromptStyle


class GeneratePayload(ModelPayload):
    generation: GenerationConfig
    knobs: Knobs
    prompts: list[str]
    samples: int = Field(ge=1)
    greedy: bool = False
    seed: int
    cache_key: str | None = None  # the adapter to load; None: the base model alone
    # The reference answer of each prompt, for the fix_chance objective (None: not computed),
    # and how many answers it counts (docs/objectives.md, "fix_chance").
    answers: list[str] | None = None
    fix_chance_k: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _an_answer_per_prompt(self) -> GeneratePayload:
        if self.answers is not None and len(self.answers) != len(self.prompts):
            raise ValueError(f"{len(self.answers)} reference answers for {len(self.prompts)} prompts")
        return self


class TestPayload(Contract):
    __test__ = False  # not a pytest class

    benchmark_root: str
    problem: str
    raw: str  # the model's answer, unextracted
    sandbox: SandboxConfig = SandboxConfig()


# ------------------------------------------------------------------ outputs


class TrainOutput(Contract):
    cache_key: str
    # Recorded only: whether *this* job found the adapter ready depends on timing and on earlier
    # runs. The engine counts cache hits itself, deterministically.
    cache_hit: bool
    final_loss: float | None = None
    train_tokens: int | None = None
    train_seconds: float | None = None


class GenerateOutput(Contract):
    texts: list[list[str]]  # texts[prompt][sample]
    generate_seconds: float | None = None
    fix_chances: list[Annotated[float, Field(ge=0.0, le=1.0)]] | None = None  # one per prompt, if asked


class ExtractionInfo(Contract):
    """How the candidate was found (an applied line edit, whole code, ...) and, for an edit that
    could not be applied, why: it is scored as written, never as the buggy program."""

    method: str
    reason: str = ""


class CaseOutcome(Contract):
    case: str | int
    passed: bool
    reason: str | None = None
    cost: int | float | None = None


class TestOutput(Contract):
    __test__ = False  # not a pytest class

    candidate: str
    cases: list[CaseOutcome]
    objectives: dict[str, float]  # exactly CANDIDATE_OBJECTIVES, each in [0, 1]
    passed_all: bool
    extraction: ExtractionInfo | None = None
    style_violations: list[str] = Field(default_factory=list)
    security_issues: list[str] = Field(default_factory=list)
    error: str | None = None
    test_seconds: float | None = None
    # The meter that counted the runtime objective's cost (docs/sandbox.md "Meters"): runs on
    # different meters are compared without it. Recorded only, like the timings.
    meter: str | None = None

    @field_validator("objectives")
    @classmethod
    def _the_objective_set(cls, value: dict[str, float]) -> dict[str, float]:
        missing = [n for n in CANDIDATE_OBJECTIVES if n not in value]
        if missing:
            raise ValueError(f"lacks objective {missing[0]!r}")
        unknown = sorted(set(value) - set(CANDIDATE_OBJECTIVES))
        if unknown:
            raise ValueError(f"unknown objective {unknown[0]!r} (known: {', '.join(CANDIDATE_OBJECTIVES)})")
        outside = [n for n in CANDIDATE_OBJECTIVES if not 0.0 <= value[n] <= 1.0]
        if outside:
            raise ValueError(f"objective {outside[0]!r} is {value[outside[0]]!r}, outside [0, 1]")
        return value


PAYLOADS: dict[JobKind, type[Contract]] = {"train": TrainPayload, "generate": GeneratePayload, "test": TestPayload}
OUTPUTS: dict[JobKind, type[Contract]] = {"train": TrainOutput, "generate": GenerateOutput, "test": TestOutput}

P = TypeVar("P", bound=Contract)


def _check_kind(kind: JobKind, model: type[Contract], table: dict[JobKind, type[Contract]], what: str) -> None:
    if table.get(kind) is not model:
        raise MessageError(f"{kind} job: {model.__name__} is not the {what} of that kind")


def _validate(model: type[P], data: Any, job_id: str, kind: str, what: str) -> P:
    """`data` as `model`; anything else is one MessageError naming the job and the field."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        field = f"{what} field {where!r}" if where else what
        why = first["msg"].removeprefix("Value error, ")  # our own validators' words, as written
        raise MessageError(f"{kind} job {job_id}: {field}: {why}") from None


def job_for(payload: Contract, *, job_id: str, run_id: str, generation: int = 0, subject: str = "",
            problem: str | None = None, sample: int | None = None) -> Job:
    """The job that carries `payload`; its kind is the payload's."""
    kinds = [k for k, m in PAYLOADS.items() if type(payload) is m]
    if not kinds:
        raise MessageError(f"job {job_id}: {type(payload).__name__} is no job kind's payload")
    return Job(job_id=job_id, run_id=run_id, kind=kinds[0], payload=payload.model_dump(mode="json"),
               generation=generation, subject=subject, problem=problem, sample=sample)


def payload_of(job: Job, model: type[P]) -> P:
    """The job's payload as its kind's model (what a body reads)."""
    _check_kind(job.kind, model, PAYLOADS, "payload")
    return _validate(model, job.payload, job.job_id, job.kind, "payload")


def output_of(result: JobResult, model: type[P]) -> P:
    """A successful result's output as its kind's model (what the engine reads)."""
    _check_kind(result.kind, model, OUTPUTS, "output")
    if not result.ok:
        raise MessageError(f"{result.kind} job {result.job_id}: failed, it has no output ({result.error})")
    return _validate(model, result.output, result.job_id, result.kind, "output")


def output_json(kind: JobKind, job_id: str, output: Any) -> dict[str, Any]:
    """What a handler returned, in wire form: the one place a worker turns a body's answer into
    JSON. A built-in body returns its kind's output model (checked to be that kind's); a handler
    given with --handlers may return a plain dict, which the engine checks when it reads it."""
    if isinstance(output, Contract):
        model = OUTPUTS.get(kind)
        if type(output) is not model:
            raise MessageError(f"{kind} job {job_id}: the handler returned {type(output).__name__}, "
                               f"not {model.__name__ if model else 'a dict'}")
        return output.model_dump(mode="json")
    if not isinstance(output, dict):
        raise MessageError(f"{kind} job {job_id}: the handler returned {type(output).__name__}, not dict")
    return output
