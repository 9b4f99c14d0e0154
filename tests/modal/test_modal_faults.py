"""Faults on the modal backend, offline: the real worker body (coral.modal.runtime.serve) and the
real QueueExecutor over the Modal double.

Workers that get killed are separate processes sharing the double through its server (as Modal
containers share Modal's queues); kill -9 mid-job must cost one re-run, never a lost job. The
partition-cap test runs in-process: what it checks is the executor waiting for room.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coral.config import BackendConfig
from coral.execution.executor import QueueExecutor
from coral.execution.jobs import LEASES_DICT, RESULTS_QUEUE, job_queue, lease_key
from coral.execution.transport.base import MAX_PARTITION_ITEMS
from coral.execution.transport.modal_backend import ModalTransport
from coral.modal.runtime import serve
from coral.testing.modal_double import ModalDouble, shared_server

TESTS = Path(__file__).resolve().parents[1]  # the shared helpers (conftest, ...)
LEASE = 1.0
BACKEND = BackendConfig(lease_seconds=LEASE, max_retries=2)

_WORKER = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
from coral.modal.runtime import serve
from coral.testing.modal_double import connect
info = json.loads(sys.argv[1])
api = connect((info["host"], info["port"]), bytes.fromhex(info["authkey"]))
serve(["echo", "test", "train"], app_name=info["app"], idle_seconds=120, lease_seconds=info["lease"],
      handlers="coral.testing.handlers:HANDLERS", worker_id="modal:" + sys.argv[2], api=api)
"""


def wait_for(what: Callable[[], Any], label: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := what()):
        assert time.monotonic() < deadline, f"timed out waiting for {label}"
        time.sleep(0.02)
    return value


class Containers:
    """Worker processes on the shared double server, named modal:c0, modal:c1, ..."""

    def __init__(self, app: str, log_dir: Path) -> None:
        server = shared_server()
        assert server.address is not None
        self.info = json.dumps({"host": server.address[0], "port": server.address[1],
                                "authkey": server.authkey.hex(), "app": app, "lease": LEASE})
        self.transport = ModalTransport(app, api=server.client())
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, n: int) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)}
        for _ in range(n):
            name = f"c{len(self.procs)}"
            with open(self.log_dir / f"{name}.log", "wb") as log:
                self.procs[name] = subprocess.Popen(
                    [sys.executable, "-c", _WORKER, self.info, name], env=env,
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def warm(self, run_id: str) -> None:
        """Return once every live container has answered a job."""
        executor = QueueExecutor(self.transport, run_id, BACKEND)
        live = {f"modal:{n}" for n, p in self.procs.items() if p.poll() is None}
        seen: set[str] = set()
        round_ = 0
        while not live <= seen:
            batch = {f"warm{round_}-{i}": {"sleep_s": 0.05} for i in range(2 * len(live))}
            seen |= {r.worker for r in executor.submit_batch("echo", batch).result(timeout=60)}
            round_ += 1

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)


@pytest.fixture
def containers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Containers]:
    app = "f" + hashlib.sha256(request.node.name.encode()).hexdigest()[:12]
    pool = Containers(app, tmp_path)
    try:
        yield pool
    finally:
        pool.stop()


def test_a_container_killed_mid_job_is_re_run_after_its_lease_expires(
    containers: Containers,
) -> None:
    containers.start(2)
    containers.warm("warm-kill")
    transport = containers.transport
    executor = QueueExecutor(transport, "run-kill", BACKEND)
    batch = {"slow": {"sleep_s": 1.5}, **{f"fast{i}": {"i": i} for i in range(10)}}
    future = executor.submit_batch("echo", batch)
    lease = wait_for(lambda: transport.dict(LEASES_DICT).get(lease_key("run-kill", "slow", 0)),
                     "the slow job's lease")
    victim = lease["owner"].removeprefix("modal:")
    assert containers.procs[victim].pid == lease["pid"]
    os.kill(lease["pid"], signal.SIGKILL)  # the container dies holding the job: no ack, no result
    try:
        results = future.result(timeout=60)
    except TimeoutError:
        state = {j: (r.state, r.job.attempt) for j, r in executor._records.items() if not r.result}
        raise AssertionError(f"unfinished {state}; {executor.stats}; queue "
                             f"{transport.queue(job_queue('echo')).len()}; leases "
                             f"{transport.dict(LEASES_DICT).items()}") from None
    survivor = next(f"modal:{n}" for n in containers.procs if n != victim)
    assert [r.job_id for r in results] == list(batch) and all(r.ok for r in results)
    assert (results[0].attempt, results[0].worker) == (1, survivor)
    assert executor.stats.lease_expiries == 1 and executor.stats.duplicates_dropped == 0
    assert transport.queue(RESULTS_QUEUE).len(partition="run-kill") == 0
    assert transport.queue(job_queue("echo")).len() == 0


def test_identical_heavy_genes_on_two_containers_train_once(
    containers: Containers, tmp_path: Path,
) -> None:
    containers.start(2)
    containers.warm("warm-claim")
    record = tmp_path / "trained.txt"
    payload = {"cache_key": "same-genes", "out_dir": str(tmp_path / "adapters"),
               "record": str(record), "train_s": 1.0, "ttl": LEASE}
    executor = QueueExecutor(containers.transport, "run-claim", BACKEND)
    results = executor.submit_training_batch(
        {f"g{i}": payload for i in range(3)}).result(timeout=60)
    assert all(r.ok for r in results), [r.error for r in results]
    assert len({r.worker for r in results}) == 2  # both containers raced for the claim
    assert len(record.read_text().split()) == 1  # and only one trained
    assert sorted(r.output["cache_hit"] for r in results) == [False, True, True]


def test_a_batch_over_the_partition_cap_waits_in_the_window_and_loses_nothing() -> None:
    api = ModalDouble()
    transport = ModalTransport("coral", api=api)
    jobs = transport.queue(job_queue("echo"))
    n = MAX_PARTITION_ITEMS + 300
    executor = QueueExecutor(transport, "run-full", BackendConfig(lease_seconds=5.0,
                                                                   submit_timeout=60))
    # No worker yet: the submit returns at once, the window's worth in the partition, the rest
    # waiting in the executor (never a full partition that a put would block on).
    future = executor.submit_batch("echo", {f"j{i}": {"i": i} for i in range(n)})
    assert jobs.len() == executor.window < MAX_PARTITION_ITEMS
    assert executor.progress()["echo"]["waiting"] == n - executor.window
    workers = [threading.Thread(target=serve, daemon=True, kwargs=dict(
        kinds=["echo"], app_name="coral", idle_seconds=1.0, lease_seconds=5.0,
        worker_id=f"modal:w{i}", api=api)) for i in range(2)]
    for thread in workers:
        thread.start()
    results = future.result(timeout=120)
    assert [r.output["i"] for r in results] == list(range(n)) and all(r.ok for r in results)
    assert executor.stats.retries == executor.stats.lease_expiries == 0
    assert jobs.len() == 0
    for thread in workers:
        thread.join(30)
