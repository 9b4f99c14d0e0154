"""Executors with workers in threads: ordering, retries, dedup, lease expiry, serial equivalence."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coral.config import BackendConfig
from coral.errors import CoralError
from coral.execution.executor import Executor, QueueExecutor, SerialExecutor
from coral.execution.jobs import RESULTS_QUEUE, Handlers, job_queue
from coral.execution.messages import Job, JobResult, decode, encode
from coral.execution.transport.base import Transport
from coral.execution.workers import Worker
from coral.testing.handlers import HANDLERS
from coral.testing.transports import FACTORIES, TransportFactory

FAST = BackendConfig(lease_seconds=0.5, max_retries=1)


@pytest.fixture(params=FACTORIES, ids=lambda f: f.name)
def transport(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Transport]:
    factory: TransportFactory = request.param
    t = factory.make(tmp_path)
    yield t
    t.close()


class ThreadWorkers:
    """Workers in threads of this process, serving the test handlers."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.started: list[tuple[Worker, threading.Thread]] = []

    def start(self, n: int = 1) -> None:
        for _ in range(n):
            worker = Worker(self.transport, ["echo", "test", "train"],
                            handlers=Handlers(HANDLERS), lease_seconds=FAST.lease_seconds,
                            poll=0.05, worker_id=f"thread-{len(self.started)}")
            thread = threading.Thread(target=worker.run, daemon=True)
            thread.start()
            self.started.append((worker, thread))

    def stop(self) -> None:
        for worker, thread in self.started:
            worker.stop.set()
            thread.join(30)


@pytest.fixture
def workers(transport: Transport) -> Iterator[ThreadWorkers]:
    pool = ThreadWorkers(transport)
    yield pool
    pool.stop()


def make(kind: str, transport: Transport, run_id: str = "run-x",
         backend: BackendConfig = FAST) -> Executor:
    if kind == "serial":
        return SerialExecutor(transport, run_id, backend, handlers=Handlers(HANDLERS))
    return QueueExecutor(transport, run_id, backend)


def summary(results: list[JobResult]) -> list[tuple[str, bool, dict[str, Any], str | None]]:
    return [(r.job_id, r.ok, r.output, r.error) for r in results]


BATCH = {"a": {"n": 1}, "b": {"raise": "boom"}, "c": {"n": 3, "sleep_s": 0.05}, "d": {"n": 4}}


def test_serial_and_queue_executors_agree(transport: Transport, workers: ThreadWorkers) -> None:
    workers.start(2)
    queued = make("queue", transport, "run-q").submit_test_batch(BATCH).result(timeout=60)
    serial = make("serial", transport, "run-s").submit_test_batch(BATCH).result(timeout=60)
    assert summary(queued) == summary(serial)
    assert [r.job_id for r in queued] == ["a", "b", "c", "d"]  # submission order
    failed = queued[1]
    assert (failed.ok, failed.error, failed.attempt) == (False, "ValueError: boom", 1)


@pytest.mark.parametrize("kind", ["queue", "serial"])
def test_failed_jobs_are_retried_then_fail_with_the_error(
    kind: str, transport: Transport, workers: ThreadWorkers
) -> None:
    workers.start(1)
    executor = make(kind, transport, backend=BackendConfig(lease_seconds=0.5, max_retries=2))
    (result,) = executor.submit_test_batch({"bad": {"raise": "still broken"}}).result(60)
    assert (result.ok, result.attempt, result.error) == (False, 2, "ValueError: still broken")
    assert executor.stats.retries == 2
    assert executor.progress() == {"test": {"waiting": 0, "queued": 0, "running": 0, "held": 0, "done": 0, "failed": 1}}


@pytest.mark.parametrize("kind", ["queue", "serial"])
def test_as_completed_and_stream_yield_each_result_once(
    kind: str, transport: Transport, workers: ThreadWorkers
) -> None:
    workers.start(2)
    executor = make(kind, transport)
    first = executor.submit_batch("echo", {f"e{i}": {"i": i} for i in range(6)})
    assert sorted(r.job_id for r in first.as_completed(timeout=60)) == [f"e{i}" for i in range(6)]
    second = executor.submit_batch("echo", {"late": {}})
    streamed = [r.job_id for r in executor.stream_results(timeout=60)]
    assert sorted(streamed) == sorted([f"e{i}" for i in range(6)] + ["late"])
    assert list(executor.stream_results(timeout=1)) == []  # each result streams once
    assert second.done() and first.done()
    assert executor.progress()["echo"]["done"] == 7


def test_resubmitting_a_job_id_is_idempotent(transport: Transport, workers: ThreadWorkers) -> None:
    workers.start(1)
    executor = make("queue", transport)
    (first,) = executor.submit_batch("echo", {"same": {"v": 1}}).result(60)
    (again,) = executor.submit_batch("echo", {"same": {"v": 1}}).result(60)
    assert again is first
    assert transport.queue(job_queue("echo")).len() == 0
    with pytest.raises(CoralError, match="already submitted with another"):
        executor.submit_batch("echo", {"same": {"v": 2}})
    with pytest.raises(CoralError, match="submitted to run"):
        executor.submit([Job(job_id="x", run_id="other-run", kind="echo")])


def test_result_times_out_without_workers(transport: Transport) -> None:
    executor = make("queue", transport)
    future = executor.submit_batch("echo", {"a": {}, "b": {}})
    with pytest.raises(TimeoutError, match="2 of 2 jobs"):
        future.result(timeout=0.2)
    assert executor.queue_stats()[job_queue("echo")] == 2
    assert executor.progress() == {"echo": {"waiting": 0, "queued": 2, "running": 0, "held": 0, "done": 0, "failed": 0}}


def test_late_duplicates_and_foreign_results_are_dropped(transport: Transport, workers: ThreadWorkers) -> None:
    workers.start(1)
    executor = make("queue", transport)
    (result,) = executor.submit_batch("echo", {"j": {"v": 1}}).result(60)
    zombie = result.model_copy(update={"output": {"v": "zombie"}, "worker": "zombie"})
    stranger = result.model_copy(update={"job_id": "never-submitted"})
    results_q = transport.queue(RESULTS_QUEUE)
    results_q.put_many([encode(zombie), encode(stranger), "not json"], partition="run-x")
    executor.submit_batch("echo", {"k": {}}).result(60)  # pumps the partition
    assert executor.stats.duplicates_dropped == 1
    assert executor.stats.rejected == 2
    assert executor._records["j"].result is result  # the first result stands


def test_a_result_that_does_not_describe_its_job_never_stands_in_for_it(transport: Transport) -> None:
    """The engine routes a result by its kind, generation, subject, problem and sample: a result
    with a known job id but other such fields (another generation's, a stray, a forgery) used to
    be taken as the job's final result, and the real one dropped as a duplicate; the engine then
    failed the run, or filed the scores under the wrong genome."""
    executor = make("queue", transport)
    job = Job(job_id="t1", run_id="run-x", kind="test", generation=2, subject="g1", problem="gcd",
              sample=0, payload={"v": 1})
    future = executor.submit([job])
    assert decode(Job, transport.queue(job_queue("test")).get(timeout=5)) == job  # a worker took it
    real = JobResult(job_id="t1", run_id="run-x", kind="test", attempt=0, ok=True, output={"v": 1},
                     **job.ref())
    forged = [real.model_copy(update=change) for change in (
        {"generation": 1}, {"subject": "g2"}, {"problem": "lis"}, {"sample": 3}, {"kind": "echo"},
        {"attempt": 7},  # an attempt never sent
    )]
    results_q = transport.queue(RESULTS_QUEUE)
    results_q.put_many([encode(r.model_copy(update={"output": {"forged": True}})) for r in forged],
                       partition="run-x")
    with pytest.raises(TimeoutError):
        future.result(timeout=0.3)  # none of them finished the job
    assert executor.stats.rejected == len(forged)
    results_q.put(encode(real), partition="run-x")
    assert future.result(timeout=10) == [real]
    assert executor.stats.duplicates_dropped == 0


@pytest.mark.parametrize("lease", [["not", "a", "lease"], {"owner": "w"}, {"expires": "soon"},
                                   {"expires": None}, "text"])
def test_a_lease_that_is_not_a_lease_re_runs_its_job(transport: Transport, workers: ThreadWorkers,
                                                      lease: Any) -> None:
    """A value in the leases dict that no worker wrote used to raise out of the executor
    (AttributeError, ValueError: a traceback ending the run); now its job runs again."""
    executor = make("queue", transport)
    future = executor.submit_batch("echo", {"j": {"v": 1}})
    transport.queue(job_queue("echo")).get(timeout=5)  # taken by a worker that then vanished
    transport.dict("leases").put("lease:run-x:j:0", lease)
    workers.start(1)
    (result,) = future.result(timeout=60)
    assert (result.ok, result.attempt, result.output) == (True, 1, {"v": 1})
    assert executor.stats.lease_expiries == 1


def test_a_job_taken_but_never_leased_is_re_enqueued(transport: Transport, workers: ThreadWorkers) -> None:
    executor = make("queue", transport)
    future = executor.submit_batch("echo", {"lost": {"v": 1}})
    # A worker that dies between its get and its lease: the item is simply gone.
    raw = transport.queue(job_queue("echo")).get(timeout=5)
    assert decode(Job, raw).job_id == "lost"
    workers.start(1)
    (result,) = future.result(timeout=60)
    assert (result.ok, result.attempt, result.output) == (True, 1, {"v": 1})
    assert executor.stats.lease_expiries == 1


def test_an_expired_lease_is_re_enqueued_and_a_zombie_success_still_counts_once(
    transport: Transport, workers: ThreadWorkers
) -> None:
    executor = make("queue", transport)
    future = executor.submit_batch("echo", {"slow": {}})
    raw = transport.queue(job_queue("echo")).get(timeout=5)
    job = decode(Job, raw)
    # A worker that leased the job and then hung: its lease expires without renewal.
    leases = transport.dict("leases")
    leases.put("lease:run-x:slow:0", {"owner": "hung", "pid": 0, "attempt": 0,
                                       "expires": time.time() + 0.3})
    deadline = time.monotonic() + 60
    while executor._records["slow"].job.attempt == 0:
        assert time.monotonic() < deadline
        executor._pump(time.monotonic() + 0.1)
    # The hung worker wakes up and answers attempt 0 before attempt 1 runs anywhere.
    late = JobResult(job_id="slow", run_id="run-x", kind="echo", attempt=job.attempt, ok=True,
                     output={"from": "zombie"}, worker="hung")
    transport.queue(RESULTS_QUEUE).put(encode(late), partition="run-x")
    workers.start(1)
    (result,) = future.result(timeout=60)
    assert result.output == {"from": "zombie"}  # first success wins
    executor.submit_batch("echo", {"after": {}}).result(60)  # let attempt 1's answer arrive
    assert executor.stats.duplicates_dropped == 1
    assert executor.stats.lease_expiries == 1


def test_lease_expiry_counts_as_an_attempt(transport: Transport) -> None:
    executor = make("queue", transport, backend=BackendConfig(lease_seconds=0.3, max_retries=0))
    future = executor.submit_batch("echo", {"doomed": {}})
    transport.queue(job_queue("echo")).get(timeout=5)  # taken by a worker that then vanished
    (result,) = future.result(timeout=60)
    assert not result.ok and "worker lost" in (result.error or "")
    assert "gave up after 1 attempt" in (result.error or "")


@pytest.mark.parametrize("kind", ["queue", "serial"])
def test_cache_stats_count_train_hits_and_misses(
    kind: str, transport: Transport, workers: ThreadWorkers, tmp_path: Path
) -> None:
    workers.start(2)
    executor = make(kind, transport)
    common = {"out_dir": str(tmp_path / "adapters"), "record": str(tmp_path / "trained.txt"),
              "train_s": 0.2, "ttl": 2.0}
    payloads = {f"t{i}": {**common, "cache_key": "K1"} for i in range(3)}
    payloads["other"] = {**common, "cache_key": "K2"}
    results = executor.submit_training_batch(payloads).result(timeout=60)
    assert all(r.ok for r in results), [r.error for r in results]
    stats = executor.cache_stats()
    assert (stats.hits, stats.misses, stats.entries) == (2, 2, 2)
    assert len((tmp_path / "trained.txt").read_text().split()) == 2  # K1 once, K2 once


def test_queue_stats_name_every_queue(transport: Transport) -> None:
    stats = make("queue", transport).queue_stats()
    assert set(stats) == {"jobs-train", "jobs-generate", "jobs-test", "jobs-echo", "results",
                          "events"}
    assert set(make("serial", transport).queue_stats()) == {
        "jobs-train", "jobs-generate", "jobs-test", "jobs-echo"}


def test_run_ids_are_checked(transport: Transport) -> None:
    with pytest.raises(CoralError, match="invalid run id"):
        QueueExecutor(transport, "bad/run", FAST)


def test_a_long_job_with_a_live_lease_is_not_re_run(transport: Transport, workers: ThreadWorkers) -> None:
    workers.start(1)
    executor = make("queue", transport)  # lease 0.5 s; the job runs 1.2 s, renewing it
    future = executor.submit_batch("echo", {"long": {"sleep_s": 1.2}})
    seen = set()
    while not future.done():
        seen.add(next(s for s, n in executor.progress()["echo"].items() if n))
        try:
            future.result(timeout=0.05)
        except TimeoutError:
            pass
    assert "running" in seen  # once its lease was seen
    (result,) = future.result(timeout=60)
    assert (result.ok, result.attempt) == (True, 0)
    assert executor.stats.lease_expiries == 0
    assert executor.progress()["echo"]["done"] == 1
    executor.submit_batch("echo", {"after": {}}).result(60)
    assert executor.stats.duplicates_dropped == 0


def test_a_bad_batch_records_and_sends_nothing(transport: Transport) -> None:
    executor = make("queue", transport)
    good = Job(job_id="fine", run_id="run-x", kind="echo")
    with pytest.raises(CoralError, match="submitted to run"):
        executor.submit([good, Job(job_id="stray", run_id="run-y", kind="echo")])
    with pytest.raises(CoralError, match="already submitted with another"):
        executor.submit([good, good.model_copy(update={"payload": {"v": 2}})])
    assert executor.progress() == {}
    assert transport.queue(job_queue("echo")).len() == 0
    future = executor.submit([good, good])  # the same job twice is one job
    assert transport.queue(job_queue("echo")).len() == 1 and len(future) == 2
