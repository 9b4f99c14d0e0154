"""Workers: take a job, lease it, run its handler, deliver the result, release the lease.

A worker is a loop over a Transport, so the same code runs as a local process
(`coral worker --backend local`) or inside a Modal function. Queue gets have no acknowledgement
(Modal's do not either); the lease `lease:RUN:JOB:ATTEMPT` in the `leases` dict, written once a
job has run a moment and renewed every lease_seconds/3, lets the executor notice a dead worker
and re-enqueue. The result goes out before the lease is released.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import signal
import socket
import subprocess  # nosec B404
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coral.errors import CoralError, MessageError
from coral.execution.jobs import (
    BUILTIN_BODIES,
    HOLDS_DICT,
    JOB_KINDS,
    LEASES_DICT,
    RESULTS_QUEUE,
    Handlers,
    JobBodies,
    Renewer,
    WorkerContext,
    hold_key,
    job_queue,
    lease_key,
)
from coral.execution.messages import Job, JobResult, decode, encode
from coral.execution.payloads import output_json
from coral.execution.transport.base import MAX_ITEM_BYTES, Transport
from coral.home import Home

log = logging.getLogger("coral.execution.workers")

MAX_ERROR_CHARS = 500
# backend.lease_seconds's default, repeated so a worker starts without loading the config
# models (a test keeps the two equal).
DEFAULT_LEASE_SECONDS = 120.0
LEASE_DELAY = 1.0  # seconds a job runs before its lease is first written (see _serve)
DELIVER_BACKOFF = (0.05, 5.0)  # first and longest wait for room in a full results partition


STAGE_ORDER = ("train", "generate", "test")  # a genome's pipeline, first to last


def default_worker_id() -> str:
    return f"local:{socket.gethostname()}:{os.getpid()}"


def lease_owner_dead(lease: Any) -> bool:
    """Whether a lease's worker is a local process of this machine that no longer exists: its
    job need not wait for the lease to run out (lease_seconds, 120 s by default). A dead child
    counts once its parent has reaped it (the pool's check does, just before the lease check)."""
    if not isinstance(lease, dict) or not str(lease.get("owner", "")).startswith(f"local:{socket.gethostname()}:"):
        return False
    pid = lease.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def one_line(exc: BaseException) -> str:
    """'Type: first line of the message', bounded: what a failed JobResult carries."""
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return line[:MAX_ERROR_CHARS]


@dataclass
class WorkerStats:
    done: int = 0  # jobs whose handler returned
    failed: int = 0  # jobs whose handler raised (a failed result was delivered)
    rejected: int = 0  # queue items that were not valid jobs (logged and dropped)


class Worker:
    """Serve jobs of `kinds` until `stop` is set or no work came for `idle_exit` seconds."""

    def __init__(
        self, transport: Transport, kinds: Sequence[str], *, handlers: Handlers | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS, idle_exit: float | None = None,
        worker_id: str | None = None, home: Home | None = None,
        stop: threading.Event | None = None, poll: float = 0.5, partition: str | None = None,
    ) -> None:
        self.handlers = handlers or Handlers()
        self.partition = partition  # one run's jobs only (the modal backend), or the shared ones
        missing = [kind for kind in kinds if kind not in self.handlers.kinds()]
        if not kinds or missing:
            raise CoralError(
                f"no handler for job kind(s) {', '.join(missing) or '(none given)'} "
                f"(have: {', '.join(self.handlers.kinds())}; add more with --handlers module:attr)"
            )
        self.kinds = list(dict.fromkeys(kinds))
        # Later stages first: a genome that is trained and generated is finished before the next
        # one is trained, so its scores (and the Live page's point) come as early as they can;
        # an earlier stage is served whenever the later ones are empty.
        self._sweep = sorted(self.kinds, key=lambda k: STAGE_ORDER.index(k) if k in STAGE_ORDER else -1,
                             reverse=True)
        self.transport = transport
        self.lease_seconds = lease_seconds
        self.idle_exit = idle_exit
        self.worker_id = worker_id or default_worker_id()
        self.stop = stop or threading.Event()
        self.poll = poll
        self.stats = WorkerStats()
        self.ctx = WorkerContext(
            transport, worker_id=self.worker_id, home=home, claim_seconds=lease_seconds
        )
        self._queues = {kind: transport.queue(job_queue(kind)) for kind in self.kinds}
        self._results = transport.queue(RESULTS_QUEUE)
        self._leases = transport.dict(LEASES_DICT)
        self._holds = transport.dict(HOLDS_DICT)
        self._turn = 0

    def run(self) -> WorkerStats:
        log.info("worker %s serving %s", self.worker_id, ", ".join(self.kinds))
        renewer = Renewer(self.lease_seconds / 3, name="coral-lease-renewer")
        last_work = time.monotonic()
        try:
            while not self.stop.is_set():
                idle_left = None
                if self.idle_exit is not None:
                    idle_left = self.idle_exit - (time.monotonic() - last_work)
                    if idle_left <= 0:
                        log.info("worker %s: idle for %ss, exiting", self.worker_id, self.idle_exit)
                        break
                taken = self._take(self.poll if idle_left is None else min(self.poll, idle_left))
                if taken is not None:
                    self._serve(*taken, renewer)
                    last_work = time.monotonic()
        finally:
            renewer.close()
        log.info("worker %s stopped: %s", self.worker_id, self.stats)
        return self.stats

    def _take(self, wait: float) -> tuple[str, str] | None:
        """One queue item and its kind, or None after about `wait` seconds without one."""
        if len(self.kinds) > 1:  # a sweep first, so no kind waits behind another's timeout
            for kind in self._sweep:
                raw = self._queues[kind].get(block=False, partition=self.partition)
                if raw is not None:
                    return kind, raw
            wait /= len(self.kinds)
        kind = self.kinds[self._turn % len(self.kinds)]
        self._turn += 1
        try:
            raw = self._queues[kind].get(block=True, timeout=max(wait, 0.001),
                                         partition=self.partition)
        except queue.Empty:
            return None
        return (kind, raw) if raw is not None else None

    def _serve(self, kind: str, raw: str, renewer: Renewer) -> None:
        try:
            job = decode(Job, raw)
        except MessageError as exc:
            self.stats.rejected += 1
            log.error("dropped an item of queue %s: %s (item starts %r)", job_queue(kind), exc,
                      raw[:60])
            return
        key = lease_key(job.run_id, job.job_id, job.attempt)
        if self._hold_request(job.run_id) is not None and not self._wait_while_held(kind, raw, job, key, renewer):
            return
        leased: list[bool] = []

        def renew() -> None:
            self._leases.put(key, self._lease(job))
            leased.append(True)

        # The lease is written once the job has run LEASE_DELAY seconds, then renewed: a job
        # that finishes sooner costs no lease writes. The executor gives a taken, unleased job
        # lease_seconds before re-enqueueing it, so the delay never looks like a death.
        renewer.set(renew, first=min(LEASE_DELAY, self.lease_seconds / 3))
        try:
            result = self._execute(kind, job)
        finally:
            renewer.set(None)
        if not self._deliver(job, encode(result)):
            return  # the lease is left to expire: the executor re-enqueues the job if it still waits
        if leased:
            try:
                self._leases.pop(key)
            except KeyError:
                pass

    def _deliver(self, job: Job, item: str) -> bool:
        """Put a result on its run's partition, waiting with backoff while the partition is full
        (never dropping it for that alone). Meanwhile the job's lease is not renewed: if it
        expires the executor runs the job again, and whichever result lands second is dropped
        by job id. Gives up only when the worker is told to stop or the run was stopped."""
        wait = DELIVER_BACKOFF[0]
        warned = False
        while True:
            try:
                self._results.put(item, partition=job.run_id, timeout=wait)
                return True
            except (ValueError, TypeError) as exc:  # e.g. an item over the size limit
                log.error("job %s: result not delivered: %s", job.job_id, exc)
                return False
            except queue.Full:
                pass
            if not warned:
                log.warning("job %s: results partition of run %s is full; waiting for room",
                            job.job_id, job.run_id)
                warned = True
            if self.stop.is_set() or self._hold_request(job.run_id) == "stop":
                log.error("job %s: result not delivered (results partition full, worker or run "
                          "stopping)", job.job_id)
                return False
            wait = min(wait * 2, DELIVER_BACKOFF[1])

    def _hold_request(self, run_id: str) -> str | None:
        value = self._holds.get(hold_key(run_id))
        return value.get("request") if isinstance(value, dict) else None

    def _wait_while_held(self, kind: str, raw: str, job: Job, key: str, renewer: Renewer) -> bool:
        """A paused run's job waits here unstarted, under a lease marked held (the executor
        neither re-enqueues it nor counts it as running), until the run continues: True, run it
        now. A stopped run's job is dropped, and a worker told to stop puts it back: False."""

        def renew() -> None:
            self._leases.put(key, {**self._lease(job), "held": True})

        renew()
        renewer.set(renew)
        try:
            while True:
                request = self._hold_request(job.run_id)
                if request is None:
                    return True
                if request == "stop":
                    log.info("job %s: run %s stopped; dropped unstarted", job.job_id, job.run_id)
                    return False
                if self.stop.wait(self.poll):
                    self._queues[kind].put(raw, partition=self.partition)  # its run's partition
                    return False
        finally:
            renewer.set(None)
            try:
                self._leases.pop(key)
            except KeyError:
                pass

    def _lease(self, job: Job) -> dict[str, Any]:
        return {"owner": self.worker_id, "pid": os.getpid(), "attempt": job.attempt,
                "expires": time.time() + self.lease_seconds}

    def _execute(self, kind: str, job: Job) -> JobResult:
        result = execute_job(job, kind, self.handlers, self.ctx)
        if result.ok:
            self.stats.done += 1
        else:
            self.stats.failed += 1
        return result


def execute_job(job: Job, kind: str, handlers: Handlers, ctx: WorkerContext) -> JobResult:
    """Run one job's handler; any exception becomes a failed result with a one-line error."""
    started = time.time()
    base = {"job_id": job.job_id, "run_id": job.run_id, "kind": job.kind,
            "attempt": job.attempt, "worker": ctx.worker_id, "started_at": started, **job.ref()}
    try:
        if job.kind != kind:
            raise CoralError(f"job of kind {job.kind!r} arrived on queue {job_queue(kind)}")
        output = output_json(job.kind, job.job_id, handlers.get(kind)(job, ctx))
        result = JobResult(ok=True, output=output, finished_at=time.time(), **base)
        size = len(encode(result).encode("utf-8"))
        if size > MAX_ITEM_BYTES:
            raise CoralError(f"job output is {size} bytes; results are limited to "
                             f"{MAX_ITEM_BYTES} (return paths, not data)")
    except Exception as exc:
        # A traceback helps with bugs; a CoralError is the user's input, one line says it all.
        log.error("job %s (%s, attempt %d) failed: %s", job.job_id, kind, job.attempt,
                  one_line(exc), exc_info=not isinstance(exc, CoralError))
        return JobResult(ok=False, error=one_line(exc), finished_at=time.time(), **base)
    return result


def expand_kinds(kinds: Sequence[str], handlers: Handlers) -> list[str]:
    """'all' -> every kind that has a handler; 'a,b' -> a, b; unknown kinds -> CoralError."""
    out: list[str] = []
    for entry in kinds:
        for kind in (k.strip() for k in entry.split(",")):
            if kind == "all":
                out.extend(handlers.kinds())
            elif kind in JOB_KINDS:
                out.append(kind)
            else:
                raise CoralError(f"unknown job kind {kind!r} (known: {', '.join(JOB_KINDS)}, all)")
    return list(dict.fromkeys(out))


# ------------------------------------------------------------------ launching workers


class WorkerLauncher(ABC):
    """Starts workers for a run and stops them at its end (local processes, Modal functions)."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def alive(self) -> int:
        """How many started workers are still running."""

    def check(self) -> None:  # noqa: B027 - optional: launchers that can watch their workers do
        """Called by the engine between jobs: replace dead workers, or raise WorkersLost."""

    def pids(self) -> list[int]:
        """Process ids of the started workers on this machine (none for remote workers)."""
        return []

    def __enter__(self) -> WorkerLauncher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class WorkersLost(CoralError):
    """Every worker of a pool died and its restart budget is spent: the run cannot go on."""


def local_worker_cap() -> int:
    """The most local workers a run may start: twice the CPU cores, at least 4. Each worker is a
    Python process with its own model copy and torch threads; far more than the cores only
    thrash (1024 asked for on 2 cores spawned 431 before the engine wrote an event)."""
    return max(4, 2 * (os.cpu_count() or 1))


PARENT_ENV = "CORAL_PARENT_PID"  # set for a pool's workers: they die with that process


def die_with_parent(parent: int) -> None:
    """End this process (SIGKILL) when process `parent` ends, so an engine killed with kill -9
    leaves no orphans. Linux: the kernel's parent-death signal. Everywhere: a thread that
    watches the parent pid (it also covers a parent that died before prctl ran)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=watch, name="coral-parent-watch", daemon=True).start()


class LocalWorkerPool(WorkerLauncher):
    """N `coral worker --backend local` child processes sharing CORAL_HOME's queue database.

    `check()` (the engine calls it between jobs) replaces a worker that died, up to
    `max_restarts` replacements in all (default 2 x N), and raises WorkersLost once no worker is
    left and none may be started. Workers die with the process that started them."""

    def __init__(
        self, home: Home | Path | str, n: int, kinds: Sequence[str], *,
        bodies: JobBodies = BUILTIN_BODIES, lease_seconds: float | None = None,
        idle_exit: float | None = None, log_dir: Path | None = None,
        env: Mapping[str, str] | None = None, stop_grace: float = 10.0,
        max_restarts: int | None = None, run_id: str | None = None,
    ) -> None:
        if n < 1:
            raise CoralError(f"a worker pool needs at least one worker, got {n}")
        if n > local_worker_cap():
            raise CoralError(f"{n} local workers is more than this machine's cap of {local_worker_cap()} "
                             f"(2 x {os.cpu_count()} CPU cores, at least 4)")
        self.max_restarts = 2 * n if max_restarts is None else max_restarts
        self.restarts = 0
        self._seen_dead: set[int] = set()  # pids of dead workers already handled by check()
        self.run_id = run_id  # named in WorkersLost: the run to resume
        self.home = home if isinstance(home, Home) else Home(home)
        self.n = n
        self.kinds = list(kinds)
        self.bodies = bodies
        self.lease_seconds = lease_seconds
        self.idle_exit = idle_exit
        self.log_dir = log_dir or self.home.root / "logs"
        self.env = dict(env or {})
        self.stop_grace = stop_grace
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log_paths: list[Path] = []

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "coral", "worker", "--backend", "local"]
        for kind in self.kinds:
            cmd += ["--kind", kind]
        cmd += self.bodies.cli_args()
        if self.lease_seconds is not None:
            cmd += ["--lease-seconds", str(self.lease_seconds)]
        if self.idle_exit is not None:
            cmd += ["--idle-exit", str(self.idle_exit)]
        return cmd

    def start(self) -> None:
        for _ in range(self.n):
            self.start_one()

    def start_one(self) -> subprocess.Popen[bytes]:
        """One more worker (also how a caller replaces a dead one)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "CORAL_HOME": str(self.home.root), PARENT_ENV: str(os.getpid())}
        path = self.log_dir / f"worker-{os.getpid()}-{len(self.procs)}.log"
        # An argument list, never a shell; the child keeps its own copy of the log descriptor.
        with open(path, "ab") as out:
            proc = subprocess.Popen(  # nosec B603
                self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env,
            )
        self.procs.append(proc)
        self.log_paths.append(path)
        return proc

    def alive(self) -> int:
        return sum(proc.poll() is None for proc in self.procs)

    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def check(self) -> None:
        """Replace each worker that died since the last look, while restarts remain; WorkersLost
        once none is alive and none may be started (the run then fails, and resumes later)."""
        for proc in list(self.procs):
            if proc.poll() is None or proc.pid in self._seen_dead:
                continue
            self._seen_dead.add(proc.pid)
            code = proc.returncode
            how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
            if self.restarts < self.max_restarts:
                self.restarts += 1
                log.warning("worker %d %s; starting a replacement (%d of %d restarts)", proc.pid, how,
                            self.restarts, self.max_restarts)
                self.start_one()
            else:
                log.warning("worker %d %s; no restart left (%d used)", proc.pid, how, self.max_restarts)
        if self.procs and self.alive() == 0:
            last = self.procs[-1].returncode
            how = f"killed by signal {-last}" if last is not None and last < 0 else f"exit status {last}"
            said = self._last_error()
            raise WorkersLost(f"every local worker died ({len(self.procs)} started, {self.restarts} of them "
                              f"replacements; the last: {how}"
                              + (f"; a worker said: {said}" if said else "")
                              + f"); worker logs: {self.log_dir}"
                              + (f"; `coral resume {self.run_id}` continues the run" if self.run_id else ""))

    def _last_error(self) -> str | None:
        """The newest one-line error a dead worker wrote (`coral: error: ...`, e.g. a full disk
        under its queue database), so the run's one line says why they died."""
        for path in reversed(self.log_paths):
            try:
                with open(path, "rb") as handle:
                    handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
                    tail = handle.read().decode("utf-8", "replace").splitlines()
            except OSError:
                continue
            for line in reversed(tail):
                if line.startswith("coral: error: "):
                    return line[len("coral: error: "):][:300]
        return None

    def stop(self) -> None:
        """SIGTERM (a worker finishes its current job), then SIGKILL after stop_grace seconds."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
