"""Workers and claims in this process (threads); real-process faults are in test_workers_faults."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_coral

from coral.errors import CoralError
from coral.execution.jobs import (
    BUILTIN_BODIES,
    BUILTIN_HANDLERS,
    CLAIMS_DICT,
    LEASES_DICT,
    RESULTS_QUEUE,
    Handlers,
    JobBodies,
    WorkerContext,
    claim,
    claim_key,
    done_key,
    job_queue,
    lease_key,
)
from coral.execution.messages import Job, JobResult, decode, encode
from coral.execution.transport.base import MAX_ITEM_BYTES, Transport
from coral.execution.workers import Worker, expand_kinds, one_line
from coral.testing.transports import FACTORIES, TransportFactory


@pytest.fixture(params=FACTORIES, ids=lambda f: f.name)
def transport(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Transport]:
    factory: TransportFactory = request.param
    t = factory.make(tmp_path)
    yield t
    t.close()


def job(job_id: str, kind: str = "echo", run_id: str = "run-w", **payload: Any) -> Job:
    return Job(job_id=job_id, run_id=run_id, kind=kind, payload=payload)


def results(transport: Transport, run_id: str = "run-w", n: int = 1) -> list[JobResult]:
    raws = []
    while len(raws) < n:
        raws += transport.queue(RESULTS_QUEUE).get_many(n - len(raws), timeout=30,
                                                         partition=run_id)
    return [decode(JobResult, raw) for raw in raws]


def serve(transport: Transport, kinds: list[str], handlers: dict[str, Any] | None = None,
          **options: Any) -> tuple[Worker, threading.Thread]:
    worker = Worker(transport, kinds, handlers=Handlers(handlers), lease_seconds=1.0,
                    poll=0.05, **options)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread


def test_bad_items_are_logged_and_dropped_and_nothing_else_is_lost(
    transport: Transport, caplog: pytest.LogCaptureFixture
) -> None:
    q = transport.queue(job_queue("echo"))
    q.put(encode(job("a", n=1)))
    q.put("{not json")
    q.put('{"job_id": "no-run-id", "kind": "echo"}')
    q.put(encode(job("b", n=2)))
    with caplog.at_level(logging.ERROR, logger="coral.execution.workers"):
        worker, thread = serve(transport, ["echo"])
        got = results(transport, n=2)
        worker.stop.set()
        thread.join(30)
    assert [(r.job_id, r.ok, r.output) for r in got] == [("a", True, {"n": 1}),
                                                         ("b", True, {"n": 2})]
    assert worker.stats.rejected == 2
    dropped = [r.getMessage() for r in caplog.records if "dropped an item" in r.getMessage()]
    assert len(dropped) == 2
    assert "not valid JSON" in dropped[0]
    assert "run_id" in dropped[1]


def test_a_raising_job_fails_with_one_line_and_the_worker_goes_on(transport: Transport) -> None:
    def boom(job: Job, ctx: WorkerContext) -> dict[str, Any]:
        if job.payload.get("boom"):
            raise RuntimeError("it broke\nsecond line of detail")
        return {"fine": True}

    q = transport.queue(job_queue("test"))
    q.put_many([encode(job("bad", "test", boom=True)), encode(job("good", "test"))])
    worker, thread = serve(transport, ["test"], {"test": boom})
    bad, good = results(transport, n=2)
    worker.stop.set()
    thread.join(30)
    assert (bad.ok, bad.error) == (False, "RuntimeError: it broke")
    assert (good.ok, good.output) == (True, {"fine": True})
    assert worker.stats.failed == 1 and worker.stats.done == 1


@pytest.mark.parametrize("output, error", [
    (["not", "a", "dict"], "returned list, not dict"),
    ({"blob": "x" * MAX_ITEM_BYTES}, "results are limited"),
    ({"obj": object()}, "Error"),
])
def test_bad_handler_outputs_become_failed_results(
    transport: Transport, output: Any, error: str
) -> None:
    transport.queue(job_queue("test")).put(encode(job("j", "test")))
    worker, thread = serve(transport, ["test"], {"test": lambda j, c: output})
    (result,) = results(transport)
    worker.stop.set()
    thread.join(30)
    assert not result.ok and error in (result.error or "")


def test_a_job_on_the_wrong_queue_fails_clearly(transport: Transport) -> None:
    transport.queue(job_queue("echo")).put(encode(job("j", "test")))
    worker, thread = serve(transport, ["echo"])
    (result,) = results(transport)
    worker.stop.set()
    thread.join(30)
    assert not result.ok and "arrived on queue jobs-echo" in (result.error or "")


def test_lease_is_held_while_running_and_released_after(transport: Transport) -> None:
    seen: list[Any] = []

    def look(job: Job, ctx: WorkerContext) -> dict[str, Any]:
        time.sleep(0.5)  # longer than lease_seconds/3: the lease gets renewed meanwhile
        seen.append(ctx.transport.dict(LEASES_DICT).get(lease_key(job.run_id, job.job_id, 0)))
        return {}

    transport.queue(job_queue("test")).put(encode(job("j", "test")))
    worker, thread = serve(transport, ["test"], {"test": look})
    (result,) = results(transport)
    worker.stop.set()
    thread.join(30)
    assert result.ok
    assert seen[0]["owner"] == worker.worker_id and seen[0]["attempt"] == 0
    assert seen[0]["expires"] > result.started_at + 1.0  # renewed after it started
    assert transport.dict(LEASES_DICT).keys() == []


def test_idle_exit_ends_the_worker(transport: Transport) -> None:
    worker = Worker(transport, ["echo"], idle_exit=0.2, poll=0.05)
    stats = worker.run()
    assert (stats.done, stats.failed, stats.rejected) == (0, 0, 0)


def test_several_kinds_are_served(transport: Transport) -> None:
    transport.queue(job_queue("echo")).put(encode(job("e", x=1)))
    transport.queue(job_queue("test")).put(encode(job("t", "test", y=2)))
    worker, thread = serve(transport, ["echo", "test"], {"test": lambda j, c: dict(j.payload)})
    got = {r.job_id: r.output for r in results(transport, n=2)}
    worker.stop.set()
    thread.join(30)
    assert got == {"e": {"x": 1}, "t": {"y": 2}}


def test_kinds_without_a_handler_are_refused(transport: Transport) -> None:
    only_echo = Handlers(builtins={"echo": "coral.execution.jobs:echo"})
    with pytest.raises(CoralError, match="no handler for job kind"):
        Worker(transport, ["train"], handlers=only_echo)
    with pytest.raises(CoralError, match="unknown job kind"):
        expand_kinds(["bogus"], Handlers())
    some = Handlers({"test": lambda j, c: {}}, builtins={"echo": "coral.execution.jobs:echo"})
    assert expand_kinds(["all"], some) == ["echo", "test"]
    with pytest.raises(CoralError, match="no handler for job kind 'train'"):
        some.get("train")
    assert expand_kinds(["echo,test", "echo"], Handlers()) == ["echo", "test"]


@pytest.mark.parametrize("spec, message", [
    ("no_colon", "expected module:attr"),
    ("no_such_module_xyz:H", "cannot import"),
    ("coral.execution.jobs:NOPE", "has no attribute"),
    ("coral.execution.jobs:JOB_KINDS", "must name a dict"),
])
def test_handler_specs_fail_with_one_line(spec: str, message: str) -> None:
    with pytest.raises(CoralError, match=message):
        Handlers.from_spec(spec)


def test_job_bodies_carry_their_spec_and_resolve_it_once() -> None:
    """The override is one value: its spec crosses processes as flags, its table resolves once
    (a handler imported for the first job is the one every later job gets), a recorded spec
    fills in only when none was given, and a bad spec is the same one line when first used."""
    fakes = JobBodies("coral.testing.fakes:HANDLERS")
    assert fakes.overridden and not BUILTIN_BODIES.overridden
    assert fakes.cli_args() == ["--handlers", "coral.testing.fakes:HANDLERS"]
    assert BUILTIN_BODIES.cli_args() == []
    assert fakes.table() is fakes.table()
    assert fakes.table().get("train") is fakes.table().get("train")
    assert sorted(BUILTIN_BODIES.table().kinds()) == sorted(BUILTIN_HANDLERS)
    assert fakes == JobBodies("coral.testing.fakes:HANDLERS") and hash(fakes) == hash(JobBodies(fakes.spec))
    assert BUILTIN_BODIES.or_else("m:A") == JobBodies("m:A")
    assert fakes.or_else("m:A") is fakes
    with pytest.raises(CoralError, match="cannot import"):
        JobBodies("no_such_module_xyz:H").table()


def test_unknown_kinds_in_handler_tables_are_refused() -> None:
    with pytest.raises(CoralError, match="unknown job kind 'bake'"):
        Handlers({"bake": lambda j, c: {}})


def test_resources_are_built_once_per_process(transport: Transport) -> None:
    ctx = WorkerContext(transport, worker_id="w")
    built: list[int] = []
    for _ in range(3):
        model = ctx.resource("base-model", lambda: built.append(1) or {"weights": "loaded"})
    assert model == {"weights": "loaded"} and built == [1]


def test_one_line_errors() -> None:
    assert one_line(ValueError("a\nb")) == "ValueError: a"
    assert one_line(KeyError()) == "KeyError"
    assert len(one_line(ValueError("x" * 5000))) == 500


# ------------------------------------------------------------------ claims


def test_claim_one_winner_others_wait_and_reuse(transport: Transport, tmp_path: Path) -> None:
    claims = transport.dict(CLAIMS_DICT)
    done_dir = tmp_path / "adapter"
    trained: list[str] = []
    outcome: dict[str, bool] = {}
    barrier = threading.Barrier(4)

    def contender(name: str) -> None:
        barrier.wait()
        with claim(claims, "K", ttl=2.0, owner=name, is_done=done_dir.exists, poll=0.02) as won:
            if won:
                trained.append(name)
                time.sleep(0.3)
                done_dir.mkdir()
            outcome[name] = won

    threads = [threading.Thread(target=contender, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(trained) == 1 and sorted(outcome.values()) == [False, False, False, True]
    assert claims.get(done_key("K"))["owner"] == trained[0]
    assert claims.get(claim_key("K", 0))["state"] == "done"


def test_an_expired_claim_is_taken_over_by_the_next_generation(transport: Transport) -> None:
    claims = transport.dict(CLAIMS_DICT)
    claims.put(claim_key("K", 0), {"owner": "dead", "state": "held", "expires": time.time() - 1})
    with claim(claims, "K", ttl=1.0, owner="me") as won:
        assert won
        assert claims.get(claim_key("K", 1))["owner"] == "me"
    assert claims.get(claim_key("K", 0))["owner"] == "dead"  # never overwritten: no CAS needed


def test_a_live_claim_makes_others_wait_until_it_expires(transport: Transport) -> None:
    claims = transport.dict(CLAIMS_DICT)
    claims.put(claim_key("K", 0), {"owner": "slow", "state": "held",
                                   "expires": time.time() + 0.4})
    with claim(claims, "K", ttl=1.0, owner="me", poll=0.02) as won:
        assert won
        assert claims.get(claim_key("K", 0))["owner"] == "slow"
        assert claims.get(claim_key("K", 1))["owner"] == "me"


def test_a_failed_holder_releases_at_once(transport: Transport) -> None:
    claims = transport.dict(CLAIMS_DICT)
    with pytest.raises(RuntimeError):
        with claim(claims, "K", ttl=60.0, owner="a"):
            raise RuntimeError("training crashed")
    assert claims.get(claim_key("K", 0))["state"] == "released"
    assert not claims.contains(done_key("K"))
    with claim(claims, "K", ttl=60.0, owner="b") as won:  # no 60 s wait for expiry
        assert won


def test_done_is_reused_but_a_deleted_adapter_trains_again(
    transport: Transport, tmp_path: Path
) -> None:
    claims = transport.dict(CLAIMS_DICT)
    folder = tmp_path / "adapter"
    with claim(claims, "K", ttl=5.0, owner="a", is_done=folder.exists) as won:
        assert won
        folder.mkdir()
    with claim(claims, "K", ttl=5.0, owner="b", is_done=folder.exists) as won:
        assert not won
    folder.rmdir()  # the cache was cleared: the dict's done marker is not the truth
    with claim(claims, "K", ttl=5.0, owner="c", is_done=folder.exists) as won:
        assert won
        folder.mkdir()
    assert claims.get(claim_key("K", 1))["owner"] == "c"


def test_a_holder_renews_its_claim(transport: Transport) -> None:
    claims = transport.dict(CLAIMS_DICT)
    with claim(claims, "K", ttl=0.3, owner="a") as won:
        assert won
        first = claims.get(claim_key("K", 0))["expires"]
        time.sleep(0.45)  # past the ttl: only renewal keeps it alive
        again = claims.get(claim_key("K", 0))
        assert again["state"] == "held" and again["expires"] > first


# ------------------------------------------------------------------ the command


def test_worker_command_serves_and_exits_when_idle(tmp_path: Path) -> None:
    from coral.execution.transport import LocalTransport
    from coral.home import Home

    home = Home(tmp_path / "home")
    with LocalTransport(home.queue_db) as transport:
        transport.queue(job_queue("echo")).put(encode(job("cli", hello="world")))
    proc = run_coral("worker", "--backend", "local", "--kind", "echo", "--idle-exit", "0.5",
                     env={"CORAL_HOME": str(home.root)})
    assert proc.returncode == 0, proc.stderr
    with LocalTransport(home.queue_db) as transport:
        (result,) = results(transport)
    assert result.ok and result.output == {"hello": "world"}
    assert "serving echo" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--kind", "bogus"], "unknown job kind 'bogus'"),
    (["--kind", "echo", "--backend", "carrier-pigeon"], "unknown backend 'carrier-pigeon'"),
    (["--kind", "echo", "--handlers", "nope"], "expected module:attr"),
])
def test_worker_command_bad_input_is_one_line(args: list[str], message: str) -> None:
    proc = run_coral("worker", *args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_the_worker_default_lease_matches_the_config_default() -> None:
    from coral.config import BackendConfig
    from coral.execution.workers import DEFAULT_LEASE_SECONDS

    assert BackendConfig().lease_seconds == DEFAULT_LEASE_SECONDS


def test_later_stages_are_served_first(transport: Transport) -> None:
    """A worker finishes what is under way (tests, then generation) before it trains another
    genome: results, and the Live page's per-genome points, come as early as they can."""
    for kind in ("train", "generate", "test"):  # queued in pipeline order, before the worker starts
        transport.queue(job_queue(kind)).put(encode(job(f"{kind}-1", kind)))
    handlers = {kind: (lambda j, ctx: {}) for kind in ("train", "generate", "test")}
    worker, thread = serve(transport, ["train", "generate", "test"], handlers)
    try:
        order = [r.kind for r in results(transport, n=3)]
    finally:
        worker.stop.set()
        thread.join(10)
    assert order == ["test", "generate", "train"]
