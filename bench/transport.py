"""Trivial (echo) jobs through the local backend with 2 workers, beside multiprocessing.Pool(2).

    python bench/transport.py [--jobs 2000] [--round-trips 200] [--repeats 3] [--workers 2]

Both sides do the same work per job: decode a Job from JSON, run the echo handler, encode a
JobResult. Measured in one run after a warm-up: throughput (a batch of --jobs jobs, submit to
last result) and the median round trip of one job at a time. The pool gets each job separately
(chunksize=1), as the queue does. Targets: >= 500 jobs/s, <= 10 ms median round trip. Prints a
table, the ratios (queue / pool) and one JSON line last. Medians over --repeats.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

from coral.config import BackendConfig
from coral.execution.executor import LocalWorkerPool, QueueExecutor
from coral.execution.jobs import echo
from coral.execution.messages import Job, JobResult, decode, encode
from coral.execution.transport import LocalTransport
from coral.home import Home

RUN = "bench-transport"


def pool_echo(raw: str) -> str:
    """What a worker does for one echo job, minus the transport: the pool's job body."""
    job = decode(Job, raw)
    started = time.time()
    output = echo(job, None)  # type: ignore[arg-type]  # echo never touches its context
    return encode(JobResult(job_id=job.job_id, run_id=job.run_id, kind=job.kind, attempt=0,
                            ok=True, output=output, worker="pool", started_at=started,
                            finished_at=time.time()))


def jobs(prefix: str, n: int) -> list[Job]:
    return [Job(job_id=f"{prefix}-{i}", run_id=RUN, kind="echo", payload={"i": i})
            for i in range(n)]


def queue_side(executor: QueueExecutor, tag: str, n: int, trips: int) -> tuple[float, float]:
    batch = jobs(f"{tag}-batch", n)
    start = time.perf_counter()
    results = executor.submit(batch).result(timeout=600)
    rate = n / (time.perf_counter() - start)
    assert all(r.ok for r in results)
    latencies = []
    for job in jobs(f"{tag}-trip", trips):
        start = time.perf_counter()
        executor.submit([job]).result(timeout=60)
        latencies.append(time.perf_counter() - start)
    return rate, statistics.median(latencies)


def pool_side(pool: multiprocessing.pool.Pool, tag: str, n: int, trips: int) -> tuple[float, float]:
    batch = [encode(job) for job in jobs(f"{tag}-batch", n)]
    start = time.perf_counter()
    results = pool.map(pool_echo, batch, chunksize=1)
    rate = n / (time.perf_counter() - start)
    assert len(results) == n
    latencies = []
    for raw in (encode(job) for job in jobs(f"{tag}-trip", trips)):
        start = time.perf_counter()
        pool.apply(pool_echo, (raw,))
        latencies.append(time.perf_counter() - start)
    return rate, statistics.median(latencies)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--round-trips", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    queue_runs: list[tuple[float, float]] = []
    pool_runs: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="coral-bench-") as tmp:
        home = Home(Path(tmp))
        transport = LocalTransport(home.queue_db)
        executor = QueueExecutor(transport, RUN, BackendConfig(lease_seconds=30))
        with LocalWorkerPool(home, args.workers, ["echo"]) as workers, \
                multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            queue_side(executor, "warm", 100, 10)  # workers started, connections open
            pool_side(pool, "warm", 100, 10)
            for r in range(args.repeats):
                queue_runs.append(queue_side(executor, f"r{r}", args.jobs, args.round_trips))
                pool_runs.append(pool_side(pool, f"r{r}", args.jobs, args.round_trips))
            assert workers.alive() == args.workers, "a worker died during the benchmark"
        transport.close()

    q_rate = statistics.median(r for r, _ in queue_runs)
    q_lat = statistics.median(t for _, t in queue_runs)
    p_rate = statistics.median(r for r, _ in pool_runs)
    p_lat = statistics.median(t for _, t in pool_runs)
    print(f"{'':28}{'jobs/s':>10}{'median round trip':>20}")
    print(f"{'local queue, 2 workers':28}{q_rate:>10.0f}{q_lat * 1000:>17.2f} ms")
    print(f"{'multiprocessing.Pool(2)':28}{p_rate:>10.0f}{p_lat * 1000:>17.2f} ms")
    print(f"ratio queue/pool: throughput {q_rate / p_rate:.2f}x, round trip "
          f"{q_lat / p_lat:.2f}x (medians of {args.repeats})")
    ok = q_rate >= 500 and q_lat <= 0.010
    print(f"targets (>= 500 jobs/s, <= 10 ms): {'met' if ok else 'NOT met'}")
    print(json.dumps({"queue_jobs_per_s": round(q_rate), "queue_round_trip_ms": round(q_lat * 1e3, 3),
                      "pool_jobs_per_s": round(p_rate), "pool_round_trip_ms": round(p_lat * 1e3, 3),
                      "repeats": args.repeats, "jobs": args.jobs, "workers": args.workers,
                      "targets_met": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
