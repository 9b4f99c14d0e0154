"""Messages between the executor, the workers and the event consumers.

Every message is a pydantic model with a schema version, encoded as JSON (never pickle:
unpickling runs code). `docs/interfaces.md` documents each field.
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coral.errors import MessageError

SCHEMA_VERSION = 1

# echo: returns its payload (optionally after sleep_s): health checks and transport benchmarks.
JobKind = Literal["train", "generate", "test", "echo"]
EventType = Literal[
    "run_started",
    "run_finished",
    "run_failed",
    "run_stopped",
    "run_paused",
    "run_continued",
    "generation_started",
    "generation_finished",
    "baseline_finished",
    "job_finished",
]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: int = Field(default=SCHEMA_VERSION)


class JobRef(Message):
    """What a job is about, as typed fields: a result is routed by these, never by parsing its
    job id (an opaque, unique key). `subject` is a genome id, a gene key or "baseline"."""

    generation: int = Field(default=0, ge=0)
    subject: str = ""
    problem: str | None = None
    sample: int | None = Field(default=None, ge=0)


class Job(JobRef):
    """One unit of work. `payload` is the job body's input: per kind, the JSON of a model of
    coral.execution.payloads (built with `job_for`, read with `payload_of`); echo's is free."""

    job_id: str = Field(min_length=1, max_length=200)
    run_id: str
    kind: JobKind
    attempt: int = Field(default=0, ge=0)
    payload: dict[str, Any] = Field(default_factory=dict)

    def ref(self) -> dict[str, Any]:
        """The fields a result carries back (JobRef's)."""
        return {"generation": self.generation, "subject": self.subject, "problem": self.problem,
                "sample": self.sample}


class JobResult(JobRef):
    """The outcome of one attempt at a job, with its job's JobRef fields. Results are
    deduplicated by job_id."""

    job_id: str
    run_id: str
    kind: JobKind
    attempt: int = Field(ge=0)
    ok: bool
    output: dict[str, Any] = Field(default_factory=dict)  # per kind, a payloads model's JSON (`output_of`)
    error: str | None = None  # one line, when ok is False
    worker: str = ""  # e.g. "local:hostname:pid" or "modal:function-call-id"
    started_at: float = 0.0  # wall clock, recorded, never decides anything
    finished_at: float = 0.0


class Event(Message):
    """One entry of a run's event log. event_id = run_id:seq, so replay is idempotent."""

    event_id: str
    run_id: str
    seq: int = Field(ge=0)
    type: EventType
    generation: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    wall_time: float = 0.0  # recorded, never decides anything


def event_id(run_id: str, seq: int) -> str:
    return f"{run_id}:{seq:08d}"


M = TypeVar("M", bound=Message)


def encode(message: Message) -> str:
    return message.model_dump_json()


def decode(model: type[M], raw: str | bytes) -> M:
    """Parse JSON into `model`; anything else is a MessageError with one line naming the problem."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MessageError(f"{model.__name__} message is not valid JSON: {exc}") from None
    except RecursionError:  # valid JSON nested past the parser's depth: still one line, not a traceback
        raise MessageError(f"{model.__name__} message is nested too deeply") from None
    if not isinstance(data, dict):
        raise MessageError(f"{model.__name__} message must be a JSON object, got {type(data).__name__}")
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise MessageError(
            f"{model.__name__} message has schema_version {version!r}; this CORAL reads {SCHEMA_VERSION}"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(message)"
        raise MessageError(f"{model.__name__} message{_which_job(data)}: {where}: {first['msg']}") from None


def _which_job(data: dict[str, Any]) -> str:
    """' (job ID, kind KIND)' when the message names them, so a bad job is found by its id."""
    parts = [f"{name} {data[key]!r}" for key, name in (("job_id", "job"), ("kind", "kind"))
             if isinstance(data.get(key), str)]
    return f" ({', '.join(parts)})" if parts else ""
