"""Job bodies and what they share: where jobs flow, the kind -> handler registry, the
per-process WorkerContext, and the adapter claim that makes identical heavy genes train once.

A handler is `handler(job, ctx) -> output` (the JobResult output: the kind's output model,
coral.execution.payloads). It runs in a worker process (or in-process under SerialExecutor);
it raises to fail the job. Per-process resources (the loaded
base model, a tokenizer) live in `ctx.resource(name, factory)`, created on first use and kept for
the process's life: a base model loads once per worker by construction.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel

from coral.errors import CoralError, MessageError
from coral.execution.messages import Job
from coral.execution.transport.base import Dict, Transport
from coral.home import Home

log = logging.getLogger("coral.execution.jobs")
T = TypeVar("T")

# ------------------------------------------------------------------ where things flow

JOB_KINDS = ("train", "generate", "test", "echo")
RESULTS_QUEUE = "results"  # partition = run id; only that run's executor consumes it
EVENTS_QUEUE = "events"  # partition = run id; the engine publishes, the ingestor drains
LEASES_DICT = "leases"
CLAIMS_DICT = "claims"
# Run id -> {"request": "pause" | "stop"}: workers start no job of a run held here (a paused
# run's jobs wait unstarted; a stopped run's queued jobs are dropped). Written by run control
# (coral/run/control.py), cleared when a run starts or finishes.
HOLDS_DICT = "holds"


def hold_key(run_id: str) -> str:
    return f"hold:{run_id}"


def job_queue(kind: str) -> str:
    if kind not in JOB_KINDS:
        raise CoralError(f"unknown job kind {kind!r} (known: {', '.join(JOB_KINDS)})")
    return f"jobs-{kind}"


def lease_key(run_id: str, job_id: str, attempt: int) -> str:
    # Per attempt: a zombie renewing attempt 0 never masks the lease of attempt 1.
    return f"lease:{run_id}:{job_id}:{attempt}"


def claim_key(cache_key: str, generation: int) -> str:
    return f"claim:{cache_key}:{generation}"


def done_key(cache_key: str) -> str:
    return f"done:{cache_key}"


# ------------------------------------------------------------------ handlers

# A built-in body returns its kind's output model (coral.execution.payloads); a handler given with
# --handlers may return a plain JSON object, checked when the engine reads it.
HandlerOutput = BaseModel | dict[str, Any]
Handler = Callable[[Job, "WorkerContext"], HandlerOutput]

# Built-in bodies as "module:attr", imported on first use so a test-only worker never imports
# torch. Train/generate/test bodies register here.
BUILTIN_HANDLERS: dict[str, str] = {
    "echo": "coral.execution.jobs:echo",
    "train": "coral.execution.job_bodies:train",
    "generate": "coral.execution.job_bodies:generate",
    "test": "coral.execution.job_bodies:test",
}


def load_object(spec: str) -> Any:
    """Import 'package.module:attr'; CoralError with one line when that is not possible."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CoralError(f"handler spec {spec!r}: expected module:attr, e.g. mypkg.jobs:HANDLERS")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CoralError(f"handler spec {spec!r}: cannot import {module_name}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise CoralError(f"handler spec {spec!r}: {module_name} has no attribute {attr}") from None


class Handlers:
    """kind -> handler: the built-ins, overridden or extended by `extra` (handlers or specs)."""

    def __init__(
        self, extra: Mapping[str, Handler | str] | None = None, *,
        builtins: Mapping[str, Handler | str] | None = None,
    ) -> None:
        base = BUILTIN_HANDLERS if builtins is None else builtins
        self._table: dict[str, Handler | str] = {**base, **(extra or {})}
        for kind in self._table:
            job_queue(kind)  # validates the kind
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, spec: str | None) -> Handlers:
        """--handlers module:attr names a mapping of kind -> handler (or 'module:attr')."""
        if spec is None:
            return cls()
        extra = load_object(spec)
        if not isinstance(extra, Mapping):
            raise CoralError(f"handler spec {spec!r} must name a dict of kind -> handler")
        return cls(extra)

    def kinds(self) -> list[str]:
        return sorted(self._table)

    def get(self, kind: str) -> Handler:
        with self._lock:
            entry = self._table.get(kind)
            if entry is None:
                raise CoralError(
                    f"no handler for job kind {kind!r} (have: {', '.join(self.kinds())})"
                )
            if isinstance(entry, str):
                entry = self._table[kind] = load_object(entry)
            if not callable(entry):
                raise CoralError(f"handler for job kind {kind!r} is not callable")
            return entry


@dataclass(frozen=True)
class JobBodies:
    """The job-body override of a run, a worker or a deployment, as one value: `spec` is the
    "module:attr" of `--handlers` (stand-in bodies for tests and benchmarks), None for the
    built-ins. It travels whole (RunContext, worker pools, Modal containers, the dashboard's
    launches), crosses processes as its spec (`cli_args`, a run's record) and resolves to the
    kind -> handler table once per process (`table`)."""

    spec: str | None = None
    # The resolved table: per process, not a field (dataclasses.asdict, copies and pickles of a
    # request that carries these bodies see the spec only; handlers may hold locks).
    _table: ClassVar[list[Handlers]]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_table", [])

    @property
    def overridden(self) -> bool:
        """Whether job bodies other than the built-ins run (a run of stand-ins, not science)."""
        return self.spec is not None

    def table(self) -> Handlers:
        """kind -> handler; a bad spec is one CoralError line. Resolved once, on first use."""
        if not self._table:
            self._table.append(Handlers.from_spec(self.spec))
        return self._table[0]

    def cli_args(self) -> list[str]:
        """The flags that give a child process (`coral run`, `coral worker`, the dashboard) the
        same bodies."""
        return ["--handlers", self.spec] if self.spec else []

    def or_else(self, spec: str | None) -> JobBodies:
        """These bodies if overridden, else those of `spec` (a resumed run's recorded ones)."""
        return self if self.overridden else JobBodies(spec)

    # A value is its spec: copies, pickles and Streamlit's cache keys carry the spec only, never
    # the resolved table (handlers may hold locks and other per-process state).
    def __reduce__(self) -> tuple[type[JobBodies], tuple[str | None]]:
        return (JobBodies, (self.spec,))

    def __deepcopy__(self, memo: dict[int, object]) -> JobBodies:
        return self


BUILTIN_BODIES = JobBodies()  # no override: the default wherever bodies are optional


def echo(job: Job, ctx: WorkerContext) -> dict[str, Any]:
    """Return the payload, after `sleep_s` seconds if given: health checks and benchmarks."""
    sleep_s = job.payload.get("sleep_s", 0)
    if not isinstance(sleep_s, (int, float)) or isinstance(sleep_s, bool) or sleep_s < 0:
        raise MessageError(f"echo payload sleep_s must be a number >= 0, got {sleep_s!r}")
    if sleep_s:
        time.sleep(sleep_s)
    return dict(job.payload)


# ------------------------------------------------------------------ per-process context


class WorkerContext:
    """What a handler may use besides its job: transport, home, and lazily built resources."""

    def __init__(
        self, transport: Transport, *, worker_id: str, home: Home | None = None,
        claim_seconds: float = 120.0,
    ) -> None:
        self.transport = transport
        self.worker_id = worker_id
        self.home = home or Home()
        self.claim_seconds = claim_seconds
        # Shared storage that others see only after an explicit sync (a Modal Volume): `publish`
        # makes this process's writes visible, `refresh` shows it everyone's published writes.
        self.publish: Callable[[], None] | None = None
        self.refresh: Callable[[], None] | None = None
        self._resources: dict[str, Any] = {}
        self._lock = threading.Lock()

    def resource(self, name: str, factory: Callable[[], T]) -> T:
        """The process-wide object `name`, built by `factory` the first time it is asked for."""
        with self._lock:
            if name not in self._resources:
                self._resources[name] = factory()
            return self._resources[name]

    def claim(
        self, cache_key: str, *, ttl: float | None = None,
        is_done: Callable[[], bool] | None = None,
    ) -> Any:
        """`with ctx.claim(key, is_done=adapter_exists) as won:` see `claim`."""
        return claim(
            self.transport.dict(CLAIMS_DICT), cache_key, ttl or self.claim_seconds,
            owner=self.worker_id, is_done=is_done, publish=self.publish, refresh=self.refresh,
        )


# ------------------------------------------------------------------ renewals and claims


class Renewer:
    """A daemon thread that calls the current `renew` function, first after `first` seconds,
    then every `interval` seconds.

    One per worker process (not a thread per job). `set` waits for a running renewal, so after
    `set(None)` returns no stale renewal can resurrect a released lease.
    """

    def __init__(self, interval: float, name: str = "coral-renewer") -> None:
        self.interval = interval
        self._fn: Callable[[], object] | None = None
        self._due = 0.0
        self._closed = False
        self._wakes_at: float | None = None  # when the thread's current wait ends (None: never)
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def set(self, fn: Callable[[], object] | None, first: float | None = None) -> None:
        with self._cond:
            self._fn = fn
            self._due = time.monotonic() + (self.interval if first is None else first)
            # Wake the thread only if it would sleep past the new due time: a worker serving
            # a thousand short jobs a second would otherwise pay two thread switches a job.
            if fn is not None and (self._wakes_at is None or self._wakes_at > self._due):
                self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                wait = None if self._fn is None else self._due - now
                if wait is None or wait > 0:
                    self._wakes_at = None if wait is None else now + wait
                    self._cond.wait(wait)
                    self._wakes_at = None
                    continue
                fn = self._fn
                if fn is None:  # cannot happen (wait is None then); narrows the type
                    continue
                try:
                    fn()  # read under the same lock that `set` takes
                except Exception as exc:  # a failed renewal must not kill the job
                    log.warning("renewal failed: %s", exc)
                self._due = time.monotonic() + self.interval

    def close(self) -> None:
        with self._cond:
            self._fn = None
            self._closed = True
            self._cond.notify()
        self._thread.join()


@contextmanager
def claim(
    claims: Dict, cache_key: str, ttl: float, *, owner: str,
    is_done: Callable[[], bool] | None = None, poll: float | None = None,
    publish: Callable[[], None] | None = None, refresh: Callable[[], None] | None = None,
) -> Iterator[bool]:
    """Make one caller do the work for `cache_key`; the others wait for it and reuse it.

    `with claim(d, key, ttl, owner=me, is_done=adapter_exists) as won:` yields True to exactly
    one caller (it does the work, and must make `is_done()` true before leaving the block: write
    to a temporary folder, then rename) and False to callers that arrive while or after it works
    (they return once the work is done). The holder's claim is renewed every ttl/3; if it dies, the
    claim expires after `ttl` and one waiter takes over. Without compare-and-swap, takeover is a
    put-if-absent on the next generation key `claim:KEY:N+1`. If the block raises, the claim is
    released at once and a waiter takes over. Done = `is_done()` when given (the adapter folder
    is the truth: a deleted folder trains again), else the `done:KEY` marker.

    On storage that needs explicit syncs (a Modal Volume), the winner calls `publish()` before it
    marks the claim done, and a waiter calls `refresh()` before it takes a finished, released or
    expired claim over: otherwise it would judge `is_done()` on a stale view and do the work again.
    """
    poll = poll if poll is not None else min(1.0, max(0.05, ttl / 20))
    generation = _acquire(claims, cache_key, ttl, owner, is_done, poll, refresh)
    if generation is None:
        yield False
        return
    key = claim_key(cache_key, generation)

    def held() -> dict[str, Any]:
        return {"owner": owner, "state": "held", "expires": time.time() + ttl}

    renewer = Renewer(ttl / 3, name=f"coral-claim-{cache_key}")
    renewer.set(lambda: claims.put(key, held()))
    try:
        yield True
    except BaseException:
        renewer.close()
        claims.put(key, {"owner": owner, "state": "released", "expires": 0.0})
        raise
    renewer.close()
    if publish is not None:
        publish()  # the work must be visible before anyone is told it is done
    claims.put(done_key(cache_key), {"owner": owner, "generation": generation})
    claims.put(key, {"owner": owner, "state": "done", "expires": 0.0})


def _acquire(
    claims: Dict, cache_key: str, ttl: float, owner: str,
    is_done: Callable[[], bool] | None, poll: float,
    refresh: Callable[[], None] | None = None,
) -> int | None:
    """The generation this caller won, or None once the work is done by someone."""

    def finished() -> bool:
        return is_done() if is_done is not None else claims.contains(done_key(cache_key))

    generation = 0
    refreshed = -1  # the last generation whose end this caller refreshed its view for
    while True:
        if finished():
            return None
        while True:
            value = claims.get(claim_key(cache_key, generation))
            if value is None:
                fresh = {"owner": owner, "state": "held", "expires": time.time() + ttl}
                if claims.put(claim_key(cache_key, generation), fresh, skip_if_exists=True):
                    return generation
                continue  # another caller created it first: read what it wrote
            if value.get("state") == "held" and value.get("expires", 0.0) > time.time():
                break  # someone is working on it: wait, then look again
            if refresh is not None and refreshed < generation:
                refreshed = generation
                refresh()  # the holder may have published the work: look with fresh eyes
                if finished():
                    return None
            generation += 1  # expired, released, or done-but-gone: the next generation decides
        time.sleep(poll)
