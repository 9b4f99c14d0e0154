"""The window: runs whose jobs and results outnumber the 5,000-item partition cap many times over
finish with every result applied exactly once, on the local backend (a lowered cap, so the test
is fast), on the Modal double (Modal's real cap), and through real `coral run` processes; a worker
whose results partition is full waits for room instead of dropping the result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from coral.config import BackendConfig
from coral.execution.executor import QueueExecutor
from coral.execution.jobs import RESULTS_QUEUE, Handlers, job_queue
from coral.execution.messages import Job, JobResult, decode, encode
from coral.execution.transport.base import MAX_PARTITION_ITEMS, Transport
from coral.execution.transport.local import LocalTransport
from coral.execution.workers import Worker
from coral.home import Home
from coral.run.events import read_events
from coral.run.progress import read_progress
from coral.testing.handlers import HANDLERS
from coral.testing.transports import make_modal_double

ROOT = Path(__file__).resolve().parents[2]


class Peak:
    """The most items seen in some partitions, sampled in a thread while a run goes on."""

    def __init__(self, transport: Transport, where: list[tuple[str, str | None]]) -> None:
        self.queues = [(transport.queue(name), partition) for name, partition in where]
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, max(q.len(partition=p) for q, p in self.queues))

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@contextmanager
def serve(transport: Transport, n: int, kinds: list[str], lease_seconds: float = 30.0) -> Iterator[list[Worker]]:
    workers = [Worker(transport, kinds, handlers=Handlers(HANDLERS), lease_seconds=lease_seconds,
                      poll=0.05, worker_id=f"thread-{i}") for i in range(n)]
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    try:
        yield workers
    finally:
        for worker in workers:
            worker.stop.set()
        for thread in threads:
            thread.join(30)


def through_window(transport: Transport, n: int, window: int) -> tuple[QueueExecutor, list[JobResult], int]:
    """n echo jobs, submitted at once, through 2 thread workers; (executor, results, peak depth)."""
    executor = QueueExecutor(transport, "run-many", BackendConfig(window=window, submit_timeout=30))
    with Peak(transport, [(job_queue("echo"), None), (RESULTS_QUEUE, "run-many")]) as peak:
        with serve(transport, 2, ["echo"]):
            future = executor.submit_batch("echo", {f"j{i:06d}": {"i": i} for i in range(n)})
            assert executor.progress()["echo"]["waiting"] == n - executor.window
            streamed = list(executor.stream_results(timeout=300))
            assert [r.output["i"] for r in future.result(timeout=1)] == list(range(n))
    return executor, streamed, peak.peak


def test_results_many_times_the_partition_cap_are_each_applied_once(tmp_path: Path) -> None:
    cap = 40
    transport = LocalTransport(tmp_path / "queue.sqlite", partition_cap=cap)
    n = 12 * cap
    executor, streamed, peak = through_window(transport, n, window=2000)
    assert executor.window == cap // 2  # the configured window, clamped below the transport's cap
    assert sorted(r.job_id for r in streamed) == [f"j{i:06d}" for i in range(n)]  # each once
    assert all(r.ok and r.attempt == 0 for r in streamed)
    assert peak <= executor.window < cap
    assert executor.stats.retries == executor.stats.lease_expiries == 0
    assert executor.progress()["echo"] == {"waiting": 0, "queued": 0, "running": 0, "held": 0,
                                           "done": n, "failed": 0}
    assert transport.queue(job_queue("echo")).len() == 0
    assert transport.queue(RESULTS_QUEUE).len(partition="run-many") == 0
    transport.close()


def test_the_modal_double_at_its_real_cap(tmp_path: Path) -> None:
    transport = make_modal_double(tmp_path)
    assert transport.partition_cap == MAX_PARTITION_ITEMS == 5000
    n = 3 * MAX_PARTITION_ITEMS + 1
    executor, streamed, peak = through_window(transport, n, window=1000)
    assert executor.window == 1000
    assert len(streamed) == len({r.job_id for r in streamed}) == n
    assert peak <= 1000
    assert transport.queue(RESULTS_QUEUE).len(partition="run-many") == 0


def test_a_full_results_partition_delays_a_result_but_never_drops_it(tmp_path: Path) -> None:
    transport = LocalTransport(tmp_path / "queue.sqlite", partition_cap=3)
    results = transport.queue(RESULTS_QUEUE)
    results.put_many(["filler"] * 3, partition="run-x")  # someone else's items fill the partition
    job = Job(job_id="j", run_id="run-x", kind="echo", payload={"v": 7})
    transport.queue(job_queue("echo")).put(encode(job))
    lease = 0.3
    with serve(transport, 1, ["echo"], lease_seconds=lease) as (worker,):
        deadline = time.monotonic() + 10
        while worker.stats.done == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert worker.stats.done == 1
        time.sleep(5 * lease)  # far past the time the old worker waited before dropping it
        assert results.len(partition="run-x") == 3  # still waiting for room
        assert results.get_many(3, partition="run-x") == ["filler"] * 3
        (raw,) = results.get_many(1, timeout=10, partition="run-x")
        result = decode(JobResult, raw)
        assert (result.job_id, result.ok, result.output) == ("j", True, {"v": 7})
    transport.close()


def test_a_worker_told_to_stop_gives_up_a_full_partition(tmp_path: Path) -> None:
    transport = LocalTransport(tmp_path / "queue.sqlite", partition_cap=1)
    transport.queue(RESULTS_QUEUE).put("filler", partition="run-x")
    transport.queue(job_queue("echo")).put(encode(Job(job_id="j", run_id="run-x", kind="echo")))
    with serve(transport, 1, ["echo"]) as (worker,):
        deadline = time.monotonic() + 10
        while worker.stats.done == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        started = time.monotonic()
        worker.stop.set()
    assert time.monotonic() - started < 10  # the serve() exit joined it: it did not wait forever
    assert transport.queue(RESULTS_QUEUE).len(partition="run-x") == 1
    transport.close()


def test_a_coral_run_with_more_tests_than_the_window_shows_them_waiting(tmp_path: Path) -> None:
    """A real `coral run` (local workers, stand-in bodies) whose 8 x 186 test jobs are five times
    a 150-job window (each stand-in test 30 ms, so tests wait long enough for a
    `coral status` child to start and see it): it finishes, every test is applied once, and progress.json and `coral
    status` showed tests waiting for room while the run went on."""
    home = tmp_path / "home"
    env = {**os.environ, "CORAL_HOME": str(home), "PYTHONPATH": str(ROOT), "CORAL_FAKE_SLEEP": "0.03"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "coral", "run", str(ROOT / "configs/local.yaml"), "--run-id", "win",
         "--handlers", "coral.testing.fakes:HANDLERS", "--set", "population=8",
         "--set", "generations=1", "--set", "evolution.final_rounds=0", "--set", "backend.window=150",
         # every held-out instance at one sample (local.yaml scores 76 of them)
         "--set", f"benchmark.split={ROOT / 'data/mutants/split.json'}", "--set", "benchmark.samples=1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    waiting_seen = 0
    status_lines: list[str] = []
    try:
        while proc.poll() is None:
            progress = read_progress(Home(home), "win") or {}
            test = (progress.get("stages") or {}).get("test") or {}
            waiting_seen = max(waiting_seen, int(test.get("waiting", 0)))
            if waiting_seen and not any("waiting for room" in line for line in status_lines):
                status = subprocess.run([sys.executable, "-m", "coral", "status", "win"], env=env,
                                        capture_output=True, text=True, timeout=60)
                status_lines += status.stdout.splitlines()
            time.sleep(0.05)
        out = proc.communicate(timeout=10)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert waiting_seen > 0
    # e.g. "  test 120/1,860 done · 2 running · 298 queued · 1,440 waiting for room (window full)"
    assert any(line.strip().startswith("test ") and "waiting for room" in line
               for line in status_lines), status_lines
    events = list(read_events(Home(home).events_dir("win")))
    tests = [(e.data["genome"], e.data["problem"], e.data["sample"])
             for e in events if e.type == "job_finished"]
    assert len(tests) == len(set(tests)) == (8 + 2) * 186  # 8 genomes, the baseline and echo
    status = json.loads((Home(home).run_dir("win") / "status.json").read_text())
    assert status["state"] == "finished"


def test_a_forgotten_generation_frees_its_records_and_still_drops_late_duplicates(tmp_path: Path) -> None:
    transport = LocalTransport(tmp_path / "queue.sqlite")
    executor = QueueExecutor(transport, "run-gens", BackendConfig())
    with serve(transport, 2, ["echo"]):
        first = executor.submit([Job(job_id=f"g0:{i}", run_id="run-gens", kind="echo", generation=0,
                                     payload={"i": i}) for i in range(50)]).result(timeout=60)
        executor.forget(0)
        assert executor.progress() == {} and not executor._records  # nothing of generation 0 kept
        transport.queue(RESULTS_QUEUE).put(encode(first[3]), partition="run-gens")  # a zombie's copy
        second = executor.submit([Job(job_id=f"g1:{i}", run_id="run-gens", kind="echo", generation=1,
                                      payload={"i": i}) for i in range(50)]).result(timeout=60)
    assert [r.output["i"] for r in second] == list(range(50))
    assert (executor.stats.duplicates_dropped, executor.stats.rejected) == (1, 0)
    assert executor.progress(1)["echo"]["done"] == 50 and len(executor._records) == 50
    transport.close()


def test_a_full_events_partition_skips_the_rest_of_a_batch_and_the_log_keeps_all(tmp_path: Path) -> None:
    from coral.execution.jobs import EVENTS_QUEUE
    from coral.run.events import EventLog

    transport = LocalTransport(tmp_path / "queue.sqlite", partition_cap=300)
    log = EventLog("run-ev", tmp_path / "events", transport)
    log.emit_many([("job_finished", {"i": i}, 0) for i in range(1000)])  # no ingestor drains it
    assert [e.data["i"] for e in read_events(tmp_path / "events")] == list(range(1000))
    assert transport.queue(EVENTS_QUEUE).len(partition="run-ev") == log.published == 256
    assert log.skipped_publish == 1000 - 256
    transport.close()
