"""The transport contract (coral/execution/transport/base.py), for every backend in coral.testing.transports.

Modal-shaped semantics: FIFO per partition, queue.Empty on timeout, None from a non-blocking get,
item size limit, partition cap -> queue.Full, put-if-absent that exactly one caller wins.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coral.execution.transport.base import (
    MAX_ITEM_BYTES,
    MAX_PARTITION_ITEMS,
    ItemTooLarge,
    Transport,
)
from coral.execution.transport.local import LocalTransport
from coral.testing.transports import FACTORIES, TransportFactory, by_name


@pytest.fixture(params=FACTORIES, ids=lambda f: f.name)
def factory(request: pytest.FixtureRequest) -> TransportFactory:
    return request.param


@pytest.fixture
def transport(factory: TransportFactory, tmp_path: Path) -> Iterator[Transport]:
    t = factory.make(tmp_path)
    yield t
    t.close()


# ------------------------------------------------------------------ queues


def test_fifo_per_partition(transport: Transport) -> None:
    q = transport.queue("jobs")
    q.put_many(["a", "b"])
    q.put("c")
    q.put("x", partition="p1")
    assert [q.get(), q.get(), q.get()] == ["a", "b", "c"]
    assert q.get(block=False) is None
    assert q.get(partition="p1", block=False) == "x"


def test_partitions_and_queues_are_independent(transport: Transport) -> None:
    q, other = transport.queue("one"), transport.queue("two")
    q.put_many(["1", "2"], partition="run-a")
    q.put("3", partition="run-b")
    q.put("4")
    other.put("5", partition="run-a")
    assert q.len(partition="run-a") == 2
    assert q.len(partition="run-b") == 1
    assert q.len() == 1
    assert q.len(total=True) == 4
    assert q.get_many(10, partition="run-b") == ["3"]
    assert other.get(partition="run-a") == "5"
    assert q.len(total=True) == 3


def test_non_blocking_get_on_empty(transport: Transport) -> None:
    q = transport.queue("empty")
    assert q.get(block=False) is None
    assert q.get_many(5, block=False) == []


def test_blocking_get_times_out_with_queue_empty(transport: Transport) -> None:
    q = transport.queue("empty")
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    with pytest.raises(queue.Empty):
        q.get_many(3, timeout=0.05, partition="p")


def test_get_many_returns_up_to_n_in_order(transport: Transport) -> None:
    q = transport.queue("many")
    q.put_many([str(i) for i in range(7)])
    assert q.get_many(3) == ["0", "1", "2"]
    assert q.get_many(10) == ["3", "4", "5", "6"]
    with pytest.raises(ValueError):
        q.get_many(0)


def test_blocking_get_wakes_when_another_thread_puts(transport: Transport) -> None:
    q = transport.queue("wake")
    timer = threading.Timer(0.1, lambda: q.put("late", partition="p"))
    timer.start()
    try:
        assert q.get(timeout=30, partition="p") == "late"
    finally:
        timer.join()


def test_clear_one_partition_or_all(transport: Transport) -> None:
    q = transport.queue("clear")
    q.put_many(["a", "b"], partition="p")
    q.put("c")
    q.clear(partition="p")
    assert q.len(partition="p") == 0
    assert q.len() == 1
    q.put("d", partition="p")
    q.clear(all=True)
    assert q.len(total=True) == 0


def test_items_are_text_within_the_size_limit(transport: Transport) -> None:
    q = transport.queue("sizes")
    q.put("x" * MAX_ITEM_BYTES)  # exactly at the limit
    assert len(q.get() or "") == MAX_ITEM_BYTES
    with pytest.raises(ItemTooLarge):
        q.put("x" * (MAX_ITEM_BYTES + 1))
    with pytest.raises(ItemTooLarge):
        q.put_many(["ok", "é" * (MAX_ITEM_BYTES // 2 + 1)])  # counted in UTF-8 bytes
    with pytest.raises(TypeError):
        q.put(b"bytes")
    with pytest.raises(TypeError):
        q.put({"a": 1})
    assert q.len() == 0  # a rejected put_many stores nothing


def test_partition_cap_raises_full(transport: Transport) -> None:
    q = transport.queue("cap")
    q.put_many(["i"] * (MAX_PARTITION_ITEMS - 1), partition="p")
    with pytest.raises(queue.Full):
        q.put_many(["j", "k"], partition="p", timeout=0.05)  # all or nothing
    q.put("last", partition="p")
    with pytest.raises(queue.Full):
        q.put("over", partition="p", timeout=0.05)
    with pytest.raises(queue.Full):
        q.put("over", partition="p", block=False)
    assert q.len(partition="p") == MAX_PARTITION_ITEMS
    q.put("elsewhere", partition="q")  # the cap is per partition
    q.get(partition="p")
    q.put("fits again", partition="p", block=False)


def test_blocked_put_proceeds_when_room_appears(transport: Transport) -> None:
    q = transport.queue("room")
    q.put_many(["i"] * MAX_PARTITION_ITEMS)
    timer = threading.Timer(0.1, lambda: q.get())
    timer.start()
    try:
        q.put("in", timeout=30)
    finally:
        timer.join()
    assert q.len() == MAX_PARTITION_ITEMS


@pytest.mark.parametrize("bad", ["", "x" * 65, "é" * 33])
def test_partition_keys_are_1_to_64_bytes(transport: Transport, bad: str) -> None:
    q = transport.queue("keys")
    q.put("ok", partition="p" * 64)
    with pytest.raises(ValueError):
        q.put("x", partition=bad)
    with pytest.raises(ValueError):
        q.get(block=False, partition=bad)


@pytest.mark.parametrize("bad", ["", "has space", "a/b", "x" * 65])
def test_object_names_are_checked(transport: Transport, bad: str) -> None:
    with pytest.raises(ValueError):
        transport.queue(bad)
    with pytest.raises(ValueError):
        transport.dict(bad)


# ------------------------------------------------------------------ dicts


def test_dict_basics(transport: Transport) -> None:
    d = transport.dict("kv")
    assert d.get("missing") is None
    assert d.get("missing", 7) == 7
    assert not d.contains("k")
    assert d.put("k", {"a": [1, 2.5, None, True], "b": "é"}) is True
    assert d.get("k") == {"a": [1, 2.5, None, True], "b": "é"}
    assert d.put("k", 2) is True  # plain put overwrites
    assert d.get("k") == 2
    d.put("j", [1, 2])
    assert sorted(d.keys()) == ["j", "k"]
    assert sorted(d.items()) == [("j", [1, 2]), ("k", 2)]
    assert d.len() == 2
    assert d.pop("k") == 2
    with pytest.raises(KeyError):
        d.pop("k")
    assert d.contains("j") and not d.contains("k")


def test_put_if_absent_only_the_creator_wins(transport: Transport) -> None:
    d = transport.dict("claims")
    assert d.put("claim", {"owner": "a"}, skip_if_exists=True) is True
    assert d.put("claim", {"owner": "b"}, skip_if_exists=True) is False
    assert d.get("claim") == {"owner": "a"}
    d.pop("claim")
    assert d.put("claim", {"owner": "c"}, skip_if_exists=True) is True


def test_dict_values_must_be_json(transport: Transport) -> None:
    d = transport.dict("kv")
    with pytest.raises(TypeError):
        d.put("k", object())
    with pytest.raises(TypeError):
        d.put("k", float("nan"))
    with pytest.raises(TypeError):
        d.put(3, "v")
    with pytest.raises(ItemTooLarge):
        d.put("k", "x" * MAX_ITEM_BYTES)
    assert not d.contains("k")


def test_dicts_are_namespaced(transport: Transport) -> None:
    transport.dict("a").put("k", 1)
    assert transport.dict("b").get("k") is None
    assert transport.dict("a").get("k") == 1


def test_put_if_absent_race_between_threads(transport: Transport) -> None:
    d = transport.dict("race")
    barrier = threading.Barrier(8)
    wins: list[bool] = []

    def contend(i: int) -> None:
        barrier.wait()
        wins.append(d.put("prize", i, skip_if_exists=True))

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wins.count(True) == 1
    assert d.get("prize") in range(8)


def test_concurrent_pops_from_threads_deliver_each_item_once(transport: Transport) -> None:
    q = transport.queue("share")
    items = [str(i) for i in range(300)]
    q.put_many(items)
    got: list[list[str]] = [[] for _ in range(3)]

    def drain(i: int) -> None:
        while (item := q.get(block=False)) is not None:
            got[i].append(item)

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [item for part in got for item in part]
    assert sorted(everything, key=int) == items
    for part in got:  # FIFO: each consumer saw its items in queue order
        assert part == sorted(part, key=int)


# ------------------------------------------------------------------ across processes


def _spawn(target: object, *args: object) -> multiprocessing.process.BaseProcess:
    proc = multiprocessing.get_context("spawn").Process(target=target, args=args)
    proc.start()
    return proc


def _pop_all(name: str, folder: str, out: str, expected: int) -> None:
    transport = by_name(name).make(Path(folder))
    q = transport.queue("share")
    got = []
    while len(got) < expected:
        try:
            got.append(q.get(timeout=1.0))
        except queue.Empty:
            if Path(folder, "done").exists():
                break
    Path(out).write_text("\n".join(x for x in got if x is not None))


def _claim(name: str, folder: str, out: str) -> None:
    transport = by_name(name).make(Path(folder))
    while not Path(folder, "go").exists():
        time.sleep(0.005)
    won = transport.dict("claims").put("key", os.getpid(), skip_if_exists=True)
    Path(out).write_text("1" if won else "0")


def _multiprocess(factory: TransportFactory) -> None:
    if not factory.multiprocess:
        pytest.skip(f"{factory.name} is not shared between processes")


def test_pops_from_processes_lose_and_duplicate_nothing(
    factory: TransportFactory, tmp_path: Path
) -> None:
    _multiprocess(factory)
    transport = factory.make(tmp_path)
    n = 600
    procs = [_spawn(_pop_all, factory.name, str(tmp_path), str(tmp_path / f"out{i}"), n)
             for i in range(2)]
    q = transport.queue("share")
    for start in range(0, n, 50):  # trickle in while both consumers pop
        q.put_many([str(i) for i in range(start, start + 50)])
    while q.len() > 0:
        time.sleep(0.02)
    (tmp_path / "done").touch()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    parts = [(tmp_path / f"out{i}").read_text().split() for i in range(2)]
    everything = parts[0] + parts[1]
    assert sorted(everything, key=int) == [str(i) for i in range(n)]
    for part in parts:
        assert part == sorted(part, key=int)


def test_put_if_absent_race_between_processes(factory: TransportFactory, tmp_path: Path) -> None:
    _multiprocess(factory)
    factory.make(tmp_path).close()
    procs = [_spawn(_claim, factory.name, str(tmp_path), str(tmp_path / f"won{i}"))
             for i in range(3)]
    time.sleep(0.2)
    (tmp_path / "go").touch()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    assert sorted((tmp_path / f"won{i}").read_text() for i in range(3)) == ["0", "0", "1"]


def test_data_survives_reopening(factory: TransportFactory, tmp_path: Path) -> None:
    if not factory.persistent:
        pytest.skip(f"{factory.name} is not persistent")
    first = factory.make(tmp_path)
    first.queue("durable").put_many(["a", "b"], partition="p")
    first.dict("kv").put("k", "v")
    first.close()
    second = factory.make(tmp_path)
    assert second.queue("durable").get_many(5, partition="p") == ["a", "b"]
    assert second.dict("kv").get("k") == "v"
    second.close()


def _hold_write_lock(path: str, ready: str) -> None:
    transport = LocalTransport(path)
    with transport.write() as con:
        con.execute("INSERT INTO items (queue, part, value) VALUES ('locked', '', 'uncommitted')")
        Path(ready).touch()
        time.sleep(120)  # killed long before this ends


def test_local_kill_9_while_holding_the_write_lock(tmp_path: Path) -> None:
    """A process killed mid-transaction leaves no lock and no half-written item behind."""
    path = tmp_path / "queue.sqlite"
    transport = LocalTransport(path)
    transport.queue("locked").put("committed")
    proc = _spawn(_hold_write_lock, str(path), str(tmp_path / "ready"))
    deadline = time.monotonic() + 60
    while not (tmp_path / "ready").exists():
        assert time.monotonic() < deadline and proc.is_alive()
        time.sleep(0.01)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    q = transport.queue("locked")
    q.put("after")
    assert q.get_many(10) == ["committed", "after"]
    transport.close()


def test_local_rejects_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    from coral.errors import CoralError

    bad = tmp_path / "queue.sqlite"
    bad.write_text("this is not sqlite " * 100)
    with pytest.raises(CoralError, match="cannot open the local queue database"):
        LocalTransport(bad)
