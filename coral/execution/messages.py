"""Messages between the executor, the workers and the event consumers.

Every message is a pydantic model with a schema version, encoded as JSON (never pickle:
unpickling runs code). `docs/interfaces.md` documents each field.
"""

from __future__ import annotations

import json
import re
import reprlib
import sys
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from coral.errors import MessageError
from coral.home import is_run_id

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


def _run_id(value: str) -> str:
    """A message's run id names a results partition, a lease and a folder under CORAL_HOME/runs:
    one that is not a run id (`../x`, empty, over 64 characters) is refused on arrival, before
    a worker runs the job or anyone uses it as a key."""
    if not is_run_id(value):
        raise ValueError("not a run id (letters, digits, '.', '_' or '-', at most 64)")
    return value


RunId = Annotated[str, AfterValidator(_run_id)]


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
    run_id: RunId
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
    run_id: RunId
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
    run_id: RunId
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
        data = json.loads(raw, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except RecursionError:  # valid JSON nested past the parser's depth: still one line, not a traceback
        raise MessageError(f"{model.__name__} message is nested too deeply") from None
    except ValueError as exc:
        # JSONDecodeError and UnicodeDecodeError are ValueErrors; so is an integer past Python's
        # digit limit (4,300), which json.loads refuses with a plain ValueError, and NaN/Infinity.
        raise MessageError(f"{model.__name__} message is not valid JSON: {_bounded(exc)}") from None
    if _SURROGATE_ESCAPE.search(raw if isinstance(raw, str) else raw.decode("utf-8", "replace")):
        surrogate = _lone_surrogate(data)
        if surrogate is not None:
            raise MessageError(f"{model.__name__} message is not valid JSON: a string holds the lone "
                               f"UTF-16 surrogate \\u{ord(surrogate):04x}, which is not text")
    if not isinstance(data, dict):
        raise MessageError(f"{model.__name__} message must be a JSON object, got {type(data).__name__}")
    version = data.get("schema_version", SCHEMA_VERSION)
    if type(version) is not int or version != SCHEMA_VERSION:  # not True, 1.0 or "1"
        raise MessageError(
            f"{model.__name__} message has schema_version {reprlib.repr(version)}; this CORAL reads {SCHEMA_VERSION}"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(message)"
        why = first["msg"].removeprefix("Value error, ")  # our own validators' words, as written
        raise MessageError(f"{model.__name__} message{_which_job(data)}: {where}: {why}") from None


# An escaped UTF-16 surrogate: a pair stands for one character; a lone one is not text, and could
# be neither written to a log nor put on a queue (UTF-8 cannot encode it).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object naming a key twice (`"job_id"` twice) is ambiguous: Python keeps the last one
    silently, another reader may keep the first. Not a message."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"key {reprlib.repr(key)} appears twice in one object")
        data[key] = value
    return data


def _no_constant(name: str) -> Any:
    """NaN, Infinity and -Infinity: Python's json reads them, JSON has no such values (our encoder
    writes null for them), so a message holding one is not JSON."""
    raise ValueError(f"{name} is not a JSON value")


def _lone_surrogate(value: Any) -> str | None:
    """The first lone surrogate in a parsed message's keys or strings, else None (looked for only
    when the text holds a surrogate escape)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found = _SURROGATE_CHAR.search(item)
            if found:
                return found.group()
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


_SURROGATE_CHAR = re.compile(r"[\ud800-\udfff]")


def _short(text: str, limit: int = 80) -> str:
    """repr of a value quoted in an error, at most about `limit` characters: a megabyte job id
    must not become a megabyte error line."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def _bounded(exc: Exception, limit: int = 300) -> str:
    text = str(exc)
    if text.startswith("Exceeds the limit"):  # the digit limit's own words suggest raising it
        return f"an integer has more than {sys.get_int_max_str_digits()} digits"
    return text if len(text) <= limit else text[:limit] + "..."


def _which_job(data: dict[str, Any]) -> str:
    """' (job ID, kind KIND)' when the message names them, so a bad job is found by its id."""
    parts = [f"{name} {_short(data[key])}" for key, name in (("job_id", "job"), ("kind", "kind"))
             if isinstance(data.get(key), str)]
    return f" ({', '.join(parts)})" if parts else ""
