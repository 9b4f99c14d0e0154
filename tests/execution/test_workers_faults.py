"""Faults with real worker processes, on every backend that processes can share.

kill -9 mid-job, kill -9 of a claim holder, a raising job, a bad queue item, two runs side by
side, identical heavy genes on two workers. On the local backend the workers are the real
`coral worker` command; on others, `python -m coral.testing.handlers FACTORY FOLDER`. Short
leases (1 s) keep this quick.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coral.config import BackendConfig
from coral.execution.executor import LocalWorkerPool, QueueExecutor
from coral.execution.jobs import (
    CLAIMS_DICT,
    LEASES_DICT,
    RESULTS_QUEUE,
    JobBodies,
    claim_key,
    job_queue,
    lease_key,
)
from coral.execution.messages import JobResult
from coral.execution.transport.base import Transport
from coral.home import Home
from coral.testing.transports import FACTORIES, TransportFactory

TESTS = Path(__file__).resolve().parents[1]  # the shared helpers (conftest, ...)
LEASE = 1.0
BACKEND = BackendConfig(lease_seconds=LEASE, max_retries=2)
HANDLERS = "coral.testing.handlers:HANDLERS"


SHARED = [f for f in FACTORIES if f.multiprocess]


class FactoryWorkerPool(LocalWorkerPool):
    """Worker processes for a backend other than local: the test handlers' own entry point."""

    def __init__(self, factory: TransportFactory, folder: Path, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.factory, self.folder = factory, folder

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "coral.testing.handlers", self.factory.name,
               str(self.folder), "--lease-seconds", str(self.lease_seconds)]
        for kind in self.kinds:
            cmd += ["--kind", kind]
        return cmd


def start_backend(factory: TransportFactory, folder: Path) -> Transport:
    """The parent's transport; for local, folder is also the workers' CORAL_HOME."""
    folder.mkdir(parents=True, exist_ok=True)
    return factory.make(folder)


def pool(factory: TransportFactory, folder: Path, n: int, kinds: list[str]) -> LocalWorkerPool:
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    options: dict[str, Any] = {"lease_seconds": LEASE, "env": {"PYTHONPATH": path},
                               "stop_grace": 10}
    if factory.name == "local":
        return LocalWorkerPool(Home(folder), n, kinds, bodies=JobBodies(HANDLERS), **options)
    return FactoryWorkerPool(factory, folder, Home(folder), n, kinds, **options)


def wait_for(what: Callable[[], Any], label: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := what()):
        assert time.monotonic() < deadline, f"timed out waiting for {label}"
        time.sleep(0.02)
    return value


def warm(transport: Transport, workers: LocalWorkerPool, run_id: str) -> None:
    """Return once every worker process has answered a job (they start in about a second)."""
    executor = QueueExecutor(transport, run_id, BACKEND)
    seen: set[str] = set()
    round_ = 0
    while len(seen) < workers.n:
        assert workers.alive() == workers.n, "a worker died while starting"
        batch = {f"warm{round_}-{i}": {"sleep_s": 0.1} for i in range(workers.n * 2)}
        seen |= {r.worker for r in executor.submit_batch("echo", batch).result(timeout=60)}
        round_ += 1


def logs(workers: LocalWorkerPool, since: dict[Path, int] | None = None) -> str:
    """The workers' logs, each from its offset in `since` (log_marks) when given."""
    since = since or {}
    return "".join(path.read_bytes()[since.get(path, 0):].decode(errors="replace") for path in workers.log_paths)


def log_marks(workers: LocalWorkerPool) -> dict[Path, int]:
    """Where each worker's log ends now: what earlier tests on the shared pool wrote stays out."""
    return {path: path.stat().st_size for path in workers.log_paths if path.exists()}


@pytest.fixture(params=SHARED, ids=lambda f: f.name)
def factory(request: pytest.FixtureRequest) -> TransportFactory:
    return request.param


@pytest.fixture(scope="module", params=SHARED, ids=lambda f: f.name)
def shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Transport, LocalWorkerPool]]:
    """Two workers serving echo, test and train, for the tests that kill nobody."""
    folder = tmp_path_factory.mktemp("shared-home")
    transport = start_backend(request.param, folder)
    workers = pool(request.param, folder, 2, ["echo", "test", "train"])
    workers.start()
    try:
        warm(transport, workers, "warm-shared")
        yield transport, workers
    finally:
        workers.stop()
        transport.close()
    assert workers.alive() == 0


@pytest.mark.slow
def test_kill_9_mid_job_reruns_the_job_once(factory: TransportFactory, tmp_path: Path) -> None:
    transport = start_backend(factory, tmp_path / "home")
    with pool(factory, tmp_path / "home", 2, ["echo"]) as workers:
        warm(transport, workers, "warm")
        executor = QueueExecutor(transport, "run-kill", BACKEND)
        batch = {"slow": {"sleep_s": 1.5}, **{f"fast{i}": {"i": i} for i in range(10)}}
        future = executor.submit_batch("echo", batch)
        leases = transport.dict(LEASES_DICT)
        lease = wait_for(lambda: leases.get(lease_key("run-kill", "slow", 0)), "the slow lease")
        os.kill(lease["pid"], signal.SIGKILL)
        results = future.result(timeout=60)
        survivor = next(pid for pid in workers.pids() if pid != lease["pid"])
    assert [r.job_id for r in results] == list(batch)
    assert all(r.ok for r in results)
    slow = results[0]
    assert slow.attempt == 1 and slow.worker.endswith(f":{survivor}")
    assert executor.stats.lease_expiries == 1
    assert executor.stats.duplicates_dropped == 0
    assert transport.queue(RESULTS_QUEUE).len(partition="run-kill") == 0  # nothing else came
    assert transport.queue(job_queue("echo")).len() == 0


@pytest.mark.slow
def test_kill_9_of_a_claim_holder_lets_another_worker_train(
    factory: TransportFactory, tmp_path: Path
) -> None:
    transport = start_backend(factory, tmp_path / "home")
    record = tmp_path / "trained.txt"
    payload = {"cache_key": "heavy", "out_dir": str(tmp_path / "adapters"), "record": str(record),
               "train_s": 2.0, "ttl": LEASE}
    with pool(factory, tmp_path / "home", 2, ["echo", "train"]) as workers:
        warm(transport, workers, "warm")
        executor = QueueExecutor(transport, "run-claim-kill", BACKEND)
        future = executor.submit_training_batch({"first": payload, "second": payload})
        first_trainer = int(wait_for(lambda: record.exists() and record.read_text().split(),
                                     "the first trainer")[0])
        os.kill(first_trainer, signal.SIGKILL)
        results = future.result(timeout=60)
    survivor = next(pid for pid in workers.pids() if pid != first_trainer)
    assert [int(pid) for pid in record.read_text().split()] == [first_trainer, survivor]
    assert all(r.ok for r in results), [r.error for r in results]
    assert {r.worker for r in results} == {f"local:{os.uname().nodename}:{survivor}"}
    assert sorted(r.output["cache_hit"] for r in results) == [False, True]
    claims = transport.dict(CLAIMS_DICT)
    assert claims.get(claim_key("heavy", 0))["owner"].endswith(f":{first_trainer}")
    assert claims.get(claim_key("heavy", 1))["owner"].endswith(f":{survivor}")
    assert (tmp_path / "adapters" / "heavy" / "adapter.txt").read_text() == (
        f"trained by {survivor}\n")


def test_identical_heavy_genes_train_once(shared: Any, tmp_path: Path) -> None:
    transport, workers = shared
    record = tmp_path / "trained.txt"
    payload = {"cache_key": "same-genes", "out_dir": str(tmp_path / "adapters"),
               "record": str(record), "train_s": 1.5, "ttl": LEASE}
    executor = QueueExecutor(transport, "run-once", BACKEND)
    results = executor.submit_training_batch({"g1": payload, "g2": payload}).result(timeout=60)
    assert all(r.ok for r in results), [r.error for r in results]
    assert len({r.worker for r in results}) == 2  # both ran at the same time, on two workers
    assert len(record.read_text().split()) == 1
    assert sorted(r.output["cache_hit"] for r in results) == [False, True]
    assert (executor.cache_stats().hits, executor.cache_stats().misses) == (1, 1)


def test_a_raising_job_fails_with_its_error_and_the_batch_goes_on(shared: Any) -> None:
    transport, _ = shared
    executor = QueueExecutor(transport, "run-raise", BackendConfig(lease_seconds=LEASE,
                                                                    max_retries=1))
    batch = {"ok1": {"v": 1}, "bad": {"raise": "cannot parse candidate"}, "ok2": {"v": 2}}
    results = executor.submit_test_batch(batch).result(timeout=60)
    assert [(r.job_id, r.ok) for r in results] == [("ok1", True), ("bad", False), ("ok2", True)]
    assert results[1].error == "ValueError: cannot parse candidate"
    assert results[1].attempt == 1
    assert executor.progress()["test"] == {"waiting": 0, "queued": 0, "held": 0, "running": 0, "done": 2, "failed": 1}


def test_a_bad_queue_item_is_rejected_and_nothing_else_is_lost(shared: Any) -> None:
    transport, workers = shared
    executor = QueueExecutor(transport, "run-bad-item", BACKEND)
    before = executor.submit_batch("echo", {f"b{i}": {"i": i} for i in range(5)})
    hostile = [
        "{this is not json", '{"job_id": "half"}',
        # an integer past Python's digit limit: json.loads raised a plain ValueError, which
        # killed the worker (and each replacement) with a traceback
        '{"job_id": "big", "run_id": "run-bad-item", "kind": "echo", "attempt": 1' + "0" * 5000 + "}",
        # parses, but its echo could never be written back (UTF-8 cannot encode it)
        '{"job_id": "sur", "run_id": "run-bad-item", "kind": "echo", "payload": {"s": "\\udc80"}}',
        '{"job_id": "nan", "run_id": "run-bad-item", "kind": "echo", "payload": {"x": NaN}}',
        # no results partition to answer on: refused before the job runs
        '{"job_id": "esc", "run_id": "../elsewhere", "kind": "echo"}',
    ]
    marks = log_marks(workers)  # an earlier test's failing job body logs its traceback
    transport.queue(job_queue("echo")).put_many(hostile)
    after = executor.submit_batch("echo", {f"a{i}": {"i": i} for i in range(5)})
    results = before.result(timeout=60) + after.result(timeout=60)
    assert all(r.ok for r in results) and len(results) == 10
    wait_for(lambda: logs(workers, marks).count("dropped an item of queue jobs-echo") >= len(hostile), "the log")
    text = logs(workers, marks)
    assert text.count("dropped an item of queue jobs-echo") == len(hostile)
    assert "is not valid JSON" in text
    for needle in ("an integer has more than 4300 digits", "lone UTF-16 surrogate \\udc80",
                   "NaN is not a JSON value", "run_id: not a run id"):
        assert needle in text
    assert "Traceback" not in text
    assert workers.alive() == 2
    assert workers.restarts == 0


def test_results_of_one_run_never_reach_another(shared: Any) -> None:
    transport, _ = shared
    run_a = QueueExecutor(transport, "run-a", BACKEND)
    run_b = QueueExecutor(transport, "run-b", BACKEND)
    ids = [f"job{i}" for i in range(20)]  # the same job ids in both runs
    future_a = run_a.submit_batch("echo", {j: {"run": "a"} for j in ids})
    future_b = run_b.submit_batch("echo", {j: {"run": "b", "sleep_s": 0.01} for j in ids})
    streamed_b: list[JobResult] = list(run_b.stream_results(timeout=60))
    results_a = future_a.result(timeout=60)
    for results, run in ((results_a, "a"), (future_b.result(0), "b"), (streamed_b, "b")):
        assert len(results) == 20
        assert {(r.run_id, r.output["run"]) for r in results} == {(f"run-{run}", run)}
    assert run_a.stats.rejected == run_b.stats.rejected == 0
