"""Executors: submit batches of jobs, get their results back, lose nothing.

`QueueExecutor` puts jobs on the `jobs-KIND` queues and is the only consumer of its run's
results partition (`results`, partition = run id). It deduplicates results by job id (the first
final result wins; a zombie's late duplicate is dropped), re-submits failed jobs with attempt+1
up to `backend.max_retries`, and re-enqueues jobs whose worker died: a lease that expired, or a
job that left the queue but was never leased (see `_check_leases`). At most `backend.window`
jobs of the run are in the transport at once (the rest wait here, state "waiting"), and a put
never blocks: a queue without room is tried again while results are read, so neither a job
partition nor the results partition can fill and dispatch never stops the draining of results.
`SerialExecutor` runs the same handlers in-process through the same bookkeeping: debugging and
the equivalence check. Both are used from one thread.
"""

from __future__ import annotations

import logging
import queue
import reprlib
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from coral.config import BackendConfig
from coral.errors import CoralError, MessageError
from coral.execution.jobs import (
    CLAIMS_DICT,
    EVENTS_QUEUE,
    JOB_KINDS,
    LEASES_DICT,
    RESULTS_QUEUE,
    Handlers,
    WorkerContext,
    job_queue,
    lease_key,
)
from coral.execution.messages import Job, JobKind, JobResult, decode, encode
from coral.execution.transport.base import MAX_PARTITION_ITEMS, Transport
from coral.execution.workers import LocalWorkerPool, WorkerLauncher, execute_job, lease_owner_dead
from coral.home import Home, check_run_id

__all__ = [
    "BatchFuture", "CacheStats", "Executor", "LocalWorkerPool", "QueueExecutor",
    "SerialExecutor", "WorkerLauncher",
]

log = logging.getLogger("coral.execution.executor")

# waiting: submitted, kept in the executor until the window has room (backpressure).
# held: taken by a worker that waits, without starting it, while the run is paused.
STATES = ("waiting", "queued", "running", "held", "done", "failed")
_PUT_CHUNK = 500  # jobs per put_many: well under the partition cap and the item size limit
_PUT_BYTES = 1024 * 1024  # and at most this much JSON per put_many: no request nears Modal's limit


@dataclass(frozen=True)
class CacheStats:
    hits: int  # train results with output cache_hit true
    misses: int  # ... false (this executor's results)
    entries: int  # adapters done in the shared claims dict (all runs)


@dataclass
class ExecutorStats:
    retries: int = 0  # re-submissions after a failed result
    lease_expiries: int = 0  # re-submissions (or final failures) after a worker vanished
    duplicates_dropped: int = 0  # results for a job that already had its final result
    stale_dropped: int = 0  # failed results of an attempt already superseded
    rejected: int = 0  # results partition items that were not valid results, or not ours


@dataclass
class _Record:
    job: Job  # the current attempt
    seq: int  # dispatch order of the current attempt
    state: str = "queued"
    result: JobResult | None = None
    taken_since: float | None = None  # monotonic: when we knew it had left the queue unleased
    futures: list[BatchFuture] = field(default_factory=list)
    sent: bool = False  # the current attempt is in the transport (counts against the window)


class BatchFuture:
    """The results of one submitted batch: `result()` in submission order, or `as_completed()`."""

    def __init__(self, executor: Executor, job_ids: list[str]) -> None:
        self._executor = executor
        self.job_ids = job_ids
        self._distinct = len(set(job_ids))
        self._completed: list[JobResult] = []  # completion order, one per distinct job id

    def _complete(self, result: JobResult) -> None:
        self._completed.append(result)

    def done(self) -> bool:
        return len(self._completed) >= self._distinct

    def result(self, timeout: float | None = None) -> list[JobResult]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done():
            self._executor._wait(deadline, self)
        by_id = {r.job_id: r for r in self._completed}  # not the executor's records: forget() drops them
        return [by_id[j] for j in self.job_ids]

    def as_completed(self, timeout: float | None = None) -> Iterator[JobResult]:
        deadline = None if timeout is None else time.monotonic() + timeout
        position = 0
        while True:
            while position < len(self._completed):
                position += 1
                yield self._completed[position - 1]
            if self.done():
                return
            self._executor._wait(deadline, self)

    def __len__(self) -> int:
        return len(self.job_ids)


class Executor(ABC):
    """Bookkeeping shared by every executor; subclasses say how jobs travel and results come."""

    def __init__(self, transport: Transport, run_id: str, backend: BackendConfig) -> None:
        self.transport = transport
        self.run_id = check_run_id(run_id)
        self.backend = backend
        self._claims = transport.dict(CLAIMS_DICT)
        self.stats = ExecutorStats()
        self._records: dict[str, _Record] = {}
        self._seq = 0
        self._finished: deque[JobResult] = deque()  # completion order, not yet streamed
        self._unfinished = 0  # records without a final result
        # generation -> kind -> state -> jobs: progress() without a walk over every record.
        self._counts: dict[int | None, dict[str, dict[str, int]]] = {}
        self._forgotten: set[int | None] = set()  # generations whose finished records were dropped
        self._hits = 0
        self._misses = 0

    # ------------------------------------------------------------ submitting

    def submit(self, jobs: Sequence[Job]) -> BatchFuture:
        """Send jobs of this run; a job id already known shares that job's result (idempotent)."""
        first: dict[str, Job] = {}
        for job in jobs:  # check everything before anything is recorded or sent
            if job.run_id != self.run_id:
                raise CoralError(f"job {job.job_id}: run {job.run_id!r} submitted to run "
                                 f"{self.run_id!r}'s executor")
            record = self._records.get(job.job_id)
            known = record.job if record is not None else first.setdefault(job.job_id, job)
            if (known.kind, known.payload) != (job.kind, job.payload):
                raise CoralError(f"job id {job.job_id!r} was already submitted with another "
                                 "kind or payload")
        future = BatchFuture(self, [job.job_id for job in jobs])
        new: list[Job] = []
        for job in jobs:
            record = self._records.get(job.job_id)
            if record is None:
                record = self._records[job.job_id] = _Record(job=job, seq=self._next_seq())
                self._unfinished += 1
                self._count(record, None, record.state)
                new.append(job)
            if record.result is not None:
                future._complete(record.result)
            elif future not in record.futures:
                record.futures.append(future)
        if new:
            self._dispatch(new)
        return future

    def submit_batch(self, kind: JobKind, payloads: Mapping[str, Mapping[str, Any]]) -> BatchFuture:
        """job id -> payload, all of one kind, in submission order."""
        job_queue(kind)
        return self.submit([Job(job_id=job_id, run_id=self.run_id, kind=kind,
                                payload=dict(payload)) for job_id, payload in payloads.items()])

    def submit_training_batch(self, payloads: Mapping[str, Mapping[str, Any]]) -> BatchFuture:
        return self.submit_batch("train", payloads)

    def submit_test_batch(self, payloads: Mapping[str, Mapping[str, Any]]) -> BatchFuture:
        return self.submit_batch("test", payloads)

    # ------------------------------------------------------------ reading

    def stream_results(self, timeout: float | None = None) -> Iterator[JobResult]:
        """Final results in completion order, each once across calls; ends when none is pending."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            while self._finished:
                yield self._finished.popleft()
            if not self._unfinished:
                return
            self._wait(deadline, None)

    def progress(self, generation: int | None = None) -> dict[str, dict[str, int]]:
        """Per kind (stage): how many jobs are queued, running, held, done, failed (of one
        generation's jobs when `generation` is given; every job of the run otherwise)."""
        out: dict[str, dict[str, int]] = {}
        for gen, kinds in self._counts.items():
            if generation is not None and gen != generation:
                continue
            for kind, counts in kinds.items():
                total = out.setdefault(kind, dict.fromkeys(STATES, 0))
                for state, n in counts.items():
                    total[state] += n
        return out

    def forget(self, generation: int) -> None:
        """Drop the finished jobs of a generation whose results were all taken in, so the
        executor's memory grows with the jobs of one generation, not with every job of the run.
        A late duplicate of a forgotten job is counted and dropped like any duplicate."""
        done = [j for j, r in self._records.items()
                if r.job.generation == generation and r.result is not None]
        for job_id in done:
            del self._records[job_id]
        self._forgotten.add(generation)
        left = [r for r in self._records.values() if r.job.generation == generation]
        self._counts.pop(generation, None)
        for record in left:
            self._count(record, None, record.state)

    def cache_stats(self) -> CacheStats:
        entries = sum(key.startswith("done:") for key in self._claims.keys())
        return CacheStats(hits=self._hits, misses=self._misses, entries=entries)

    @abstractmethod
    def queue_stats(self) -> dict[str, int]: ...

    def watch(self, timeout: float) -> None:
        """Take in results and lease states for about `timeout` seconds without starting any
        job: what a paused run does, so it knows what is still finishing."""
        time.sleep(timeout)

    def close(self) -> None:  # noqa: B027 - an optional hook, empty by default
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ for subclasses

    @abstractmethod
    def _dispatch(self, jobs: list[Job]) -> None:
        """Send these jobs for execution (their records exist and are queued)."""

    @abstractmethod
    def _pump(self, deadline: float | None) -> None:
        """Wait a little (never past deadline) for results and feed each to `_on_result`."""

    def _wait(self, deadline: float | None, future: BatchFuture | None) -> None:
        if deadline is not None and time.monotonic() >= deadline:
            if future is None:
                waiting, total = self._unfinished, len(self._records)
            else:
                jobs = set(future.job_ids)
                waiting, total = len(jobs) - len(future._completed), len(jobs)
            raise TimeoutError(f"{waiting} of {total} jobs of run {self.run_id} unfinished")
        self._pump(deadline)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _count(self, record: _Record, old: str | None, new: str) -> None:
        kinds = self._counts.setdefault(record.job.generation, {})
        counts = kinds.setdefault(record.job.kind, dict.fromkeys(STATES, 0))
        if old is not None:
            counts[old] -= 1
        counts[new] += 1

    def _set_state(self, record: _Record, state: str) -> None:
        if record.state != state:
            self._count(record, record.state, state)
            record.state = state

    def _on_result(self, result: JobResult) -> None:
        record = self._records.get(result.job_id)
        if record is None and result.run_id == self.run_id and result.generation in self._forgotten:
            self.stats.duplicates_dropped += 1  # its job finished and was forgotten
            return
        if record is None or result.run_id != self.run_id:
            self.stats.rejected += 1
            log.warning("run %s: dropped a result for unknown job %r", self.run_id, result.job_id)
            return
        foreign = not_its_job(record.job, result)
        if foreign is not None:
            # The engine routes a result by these fields: one that does not describe its job
            # (another generation's, a stray, a forgery) must not stand in for the real one.
            self.stats.rejected += 1
            log.warning("run %s: dropped a result for job %r: %s", self.run_id, result.job_id, foreign)
            return
        if record.result is not None:
            self.stats.duplicates_dropped += 1
            return
        if not result.ok and result.attempt != record.job.attempt:
            self.stats.stale_dropped += 1  # that attempt was already given up; a newer one runs
            return
        if result.ok:
            # Even from an older attempt: the first success wins, later ones are duplicates.
            self._finish(record, result)
        elif record.job.attempt < self.backend.max_retries:
            self.stats.retries += 1
            log.info("job %s failed (attempt %d), retrying: %s", result.job_id, result.attempt,
                     result.error)
            self._retry(record)
        else:
            self._finish(record, result)

    def _retry(self, record: _Record) -> None:
        record.job = record.job.model_copy(update={"attempt": record.job.attempt + 1})
        record.seq = self._next_seq()
        self._set_state(record, "queued")
        record.taken_since = None
        self._dispatch([record.job])

    def _finish(self, record: _Record, result: JobResult) -> None:
        record.result = result
        self._unfinished -= 1
        self._set_state(record, "done" if result.ok else "failed")
        if result.kind == "train" and result.ok:
            hit = result.output.get("cache_hit")  # a --handlers train body may omit it: not counted
            if hit is True:
                self._hits += 1
            elif hit is False:
                self._misses += 1
        self._finished.append(result)
        for future in record.futures:
            future._complete(result)
        record.futures.clear()


def lease_expiry(lease: Any) -> float | None:
    """When a lease runs out (wall clock), or None when the value is not a lease (a worker's is
    a dict with a finite number `expires`)."""
    if not isinstance(lease, dict):
        return None
    expires = lease.get("expires")
    if isinstance(expires, bool) or not isinstance(expires, int | float) or expires != expires:
        return None
    return float(expires)


def not_its_job(job: Job, result: JobResult) -> str | None:
    """Why `result` (same job id) cannot be an answer to `job`, or None when it can: its kind,
    generation, subject, problem or sample differ from the job's, or its attempt was never sent."""
    for name in ("kind", "generation", "subject", "problem", "sample"):
        mine, theirs = getattr(job, name), getattr(result, name)
        if mine != theirs:
            return f"its {name} is {reprlib.repr(theirs)}, the job's {reprlib.repr(mine)}"
    if result.attempt > job.attempt:
        return f"its attempt {result.attempt} was never sent (the job is at attempt {job.attempt})"
    return None


class QueueExecutor(Executor):
    """Jobs through a Transport to workers (local processes or Modal functions).

    `job_partition` puts this run's jobs in their own partition of each job queue (the modal
    backend: the run id), so runs sharing the queues never take, count or wait for each other's
    jobs; None uses the shared default partition (local workers serve any run).

    The window: at most `window` jobs (`backend.window`, and at most half the transport's
    partition cap) are in the transport at once, queued, running or answered but unread; the
    others wait in `_backlog`, retries first, and go out as results come in. Every job of the
    run then fits one job partition, and every result the run's results partition, whatever
    the population: dispatch cannot block on a full queue while results wait to be read.
    """

    def __init__(
        self, transport: Transport, run_id: str, backend: BackendConfig, *,
        check_interval: float | None = None, job_partition: str | None = None,
    ) -> None:
        super().__init__(transport, run_id, backend)
        self.job_partition = job_partition
        self._health: list[Callable[[], None]] = []
        self.check_interval = check_interval or min(max(backend.lease_seconds / 4, 0.05), 5.0)
        self._results = transport.queue(RESULTS_QUEUE)
        self._leases = transport.dict(LEASES_DICT)
        self._queues = {kind: transport.queue(job_queue(kind)) for kind in JOB_KINDS}
        self._taken_seq: dict[str, int] = {}  # per kind: highest seq known to have left the queue
        self._next_check = time.monotonic() + self.check_interval
        cap = int(getattr(transport, "partition_cap", MAX_PARTITION_ITEMS))
        self.window = max(1, min(backend.window, cap // 2))
        self._backlog: deque[_Record] = deque()  # submitted, not yet in the transport
        self._inflight: dict[str, _Record] = {}  # job id -> record whose attempt is in the transport
        self._chunk = _PUT_CHUNK  # halved while a queue refuses puts (a shared, nearly full one)
        self._moved = time.monotonic()  # last time a put was accepted or a result came in

    def _dispatch(self, jobs: list[Job]) -> None:
        retries: list[_Record] = []
        for job in jobs:
            record = self._records[job.job_id]
            if record.sent:  # a retry: its earlier attempt no longer holds a place in the window
                record.sent = False
                self._inflight.pop(job.job_id, None)
                retries.append(record)
            else:
                self._backlog.append(record)
            self._set_state(record, "waiting")
        self._backlog.extendleft(reversed(retries))
        self._fill()

    def _fill(self) -> None:
        """Put waiting jobs on their queues while the window has room; never blocks. A queue
        that refuses (a shared partition full of other runs' jobs) is tried again on the next
        pump; only when nothing has moved for submit_timeout does the run fail."""
        while self._backlog and len(self._inflight) < self.window:
            batch: list[tuple[_Record, str]] = []
            size = 0
            while self._backlog and len(batch) < min(self._chunk, self.window - len(self._inflight)):
                record = self._backlog[0]
                if record.result is not None:  # an older attempt may have succeeded meanwhile
                    self._backlog.popleft()
                    continue
                text = encode(record.job)
                n = len(text.encode("utf-8"))
                if batch and size + n > _PUT_BYTES:  # one job over the cap goes alone
                    break
                self._backlog.popleft()
                batch.append((record, text))
                size += n
            by_kind: dict[str, list[tuple[_Record, str]]] = {}
            for record, text in batch:
                by_kind.setdefault(record.job.kind, []).append((record, text))
            for kind, entries in by_kind.items():
                records = [r for r, _ in entries]
                try:
                    self._queues[kind].put_many([text for _, text in entries], block=False,
                                                partition=self.job_partition)
                except queue.Full:
                    refused = [r for rs in by_kind.values() for r, _ in rs
                               if r.job.job_id not in self._inflight]
                    self._backlog.extendleft(reversed(refused))
                    self._chunk = max(1, self._chunk // 2)
                    if time.monotonic() - self._moved > self.backend.submit_timeout:
                        raise CoralError(
                            f"queue {job_queue(kind)} stayed full for {self.backend.submit_timeout}s "
                            "with no result coming back: are workers for it running?") from None
                    return
                self._moved = time.monotonic()
                self._chunk = _PUT_CHUNK
                for record in records:
                    record.seq = self._next_seq()  # dispatch order: _check_leases relies on it
                    record.sent = True
                    self._inflight[record.job.job_id] = record
                    self._set_state(record, "queued")

    def _finish(self, record: _Record, result: JobResult) -> None:
        super()._finish(record, result)
        if record.sent:
            record.sent = False
            self._inflight.pop(record.job.job_id, None)

    def add_health_check(self, check: Callable[[], None]) -> None:
        """`check()` runs with every lease check and raises (a CoralError) when the run cannot
        go on, e.g. its workers keep failing to start: waiting for results ends with it."""
        self._health.append(check)

    def _pump(self, deadline: float | None) -> None:
        self._fill()
        now = time.monotonic()
        if now >= self._next_check:
            for check in self._health:
                check()
            self._check_leases()
            self._next_check = now + self.check_interval
        until = self._next_check if deadline is None else min(self._next_check, deadline)
        self._receive(max(until - now, 0.001))

    def _receive(self, timeout: float | None) -> None:
        """Take what is in the results partition (waiting up to timeout; None: not at all)."""
        try:
            raws = self._results.get_many(256, block=timeout is not None, timeout=timeout,
                                          partition=self.run_id)
        except queue.Empty:
            return
        if raws:
            self._moved = time.monotonic()
        for raw in raws:
            try:
                result = decode(JobResult, raw)
            except MessageError as exc:
                self.stats.rejected += 1
                log.error("run %s: dropped a results item: %s", self.run_id, exc)
                continue
            record = self._records.get(result.job_id)
            if (record is not None and result.attempt == record.job.attempt
                    and not_its_job(record.job, result) is None):
                self._note_taken(record)
            self._on_result(result)
        self._fill()

    def _note_taken(self, record: _Record) -> None:
        kind = record.job.kind
        self._taken_seq[kind] = max(self._taken_seq.get(kind, 0), record.seq)

    def _check_leases(self) -> None:
        """Re-enqueue jobs whose worker vanished.

        A job has a lease while a worker runs it (from about a second in, see coral.execution.workers).
        No lease and no result means still queued, just started, or taken by a worker that
        died before leasing it. Queues are FIFO, so the job has left its queue once the queue
        is empty or a later job of ours was leased or answered; if it stays unleased and
        unanswered for lease_seconds after that, it is re-enqueued.
        """
        if not self._inflight:
            return
        prefix = f"lease:{self.run_id}:"
        leases = {k: v for k, v in self._leases.items() if k.startswith(prefix)}
        # A worker delivers before it releases: a lease missing now has its result in the
        # partition already, so reading the partition after the leases never misses it. Jobs
        # sent after the leases were read are too young to be judged now.
        pending = list(self._inflight.values())
        self._receive(None)
        pending = [r for r in pending if r.result is None and r.sent]
        now_wall, now = time.time(), time.monotonic()
        for record in pending:
            lease = leases.get(lease_key(self.run_id, record.job.job_id, record.job.attempt))
            if lease is not None:
                self._set_state(record, "held" if isinstance(lease, dict) and lease.get("held")
                                else "running")
                record.taken_since = None
                self._note_taken(record)
        empty: dict[str, bool] = {}
        for record in pending:
            job = record.job
            key = lease_key(self.run_id, job.job_id, job.attempt)
            lease = leases.get(key)
            if lease is not None:
                expires = lease_expiry(lease)
                if expires is None:  # not a lease a worker wrote: its job cannot be vouched for
                    self._expire(record, key, f"its lease is not a lease ({reprlib.repr(lease)})")
                elif expires < now_wall:
                    self._expire(record, key, f"lease of {lease.get('owner', '?')} expired")
                elif lease_owner_dead(lease):  # no need to wait out the lease of a known death
                    self._expire(record, key, f"worker {lease.get('owner', '?')} died")
                continue
            if record.state not in ("running", "held") and record.seq >= self._taken_seq.get(job.kind, 0):
                if job.kind not in empty:
                    empty[job.kind] = self._queues[job.kind].len(partition=self.job_partition) == 0
                if not empty[job.kind]:
                    continue  # may still be waiting in the queue
            if record.taken_since is None:
                record.taken_since = now
            elif now - record.taken_since > self.backend.lease_seconds:
                self._expire(record, key, "taken from the queue but not leased or answered")

    def _expire(self, record: _Record, key: str, reason: str) -> None:
        self.stats.lease_expiries += 1
        try:
            self._leases.pop(key)
        except KeyError:
            pass
        job = record.job
        if job.attempt < self.backend.max_retries:
            log.warning("job %s attempt %d: %s; re-enqueued", job.job_id, job.attempt, reason)
            self._retry(record)
            return
        now = time.time()
        self._finish(record, JobResult(
            job_id=job.job_id, run_id=job.run_id, kind=job.kind, attempt=job.attempt, ok=False,
            error=f"worker lost: {reason}; gave up after {job.attempt + 1} attempt(s)",
            worker="executor", started_at=now, finished_at=now, **job.ref(),
        ))

    def watch(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_leases()
            self._receive(max(deadline - time.monotonic(), 0.001))

    def queue_stats(self) -> dict[str, int]:
        """Depth of each job queue (this run's partition, or the shared one), and of this run's
        results and events partitions."""
        stats = {job_queue(kind): q.len(partition=self.job_partition)
                 for kind, q in self._queues.items()}
        stats[RESULTS_QUEUE] = self._results.len(partition=self.run_id)
        stats[EVENTS_QUEUE] = self.transport.queue(EVENTS_QUEUE).len(partition=self.run_id)
        return stats


class SerialExecutor(Executor):
    """The same handlers, in this process, one job at a time, in submission order."""

    def __init__(
        self, transport: Transport, run_id: str, backend: BackendConfig, *,
        handlers: Handlers | None = None, home: Home | None = None,
    ) -> None:
        super().__init__(transport, run_id, backend)
        self.handlers = handlers or Handlers()
        self.ctx = WorkerContext(transport, worker_id=f"serial:{self.run_id}", home=home,
                                 claim_seconds=backend.lease_seconds)
        self._pending: deque[Job] = deque()

    def _dispatch(self, jobs: list[Job]) -> None:
        self._pending.extend(jobs)  # no window: nothing leaves this process

    def _pump(self, deadline: float | None) -> None:
        if not self._pending:
            return
        job = self._pending.popleft()
        self._set_state(self._records[job.job_id], "running")
        self._on_result(execute_job(job, job.kind, self.handlers, self.ctx))

    def queue_stats(self) -> dict[str, int]:
        stats = dict.fromkeys((job_queue(kind) for kind in JOB_KINDS), 0)
        for job in self._pending:
            stats[job_queue(job.kind)] += 1
        return stats
