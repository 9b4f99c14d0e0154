"""The local backend: one SQLite file (WAL mode) shared by every process on this machine.

Why SQLite: durable (a committed put survives kill -9 of any process), safe for many readers and
writers (WAL + BEGIN IMMEDIATE + busy_timeout), no server to start. Pops take the write lock
only after a cheap read found an item; blocked readers poll `PRAGMA data_version` (a counter
that moves when another connection commits) with a short, growing sleep, so an idle process
costs little and a busy one answers within about a millisecond.
"""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from coral.execution.transport.base import (
    MAX_PARTITION_ITEMS,
    Dict,
    Queue,
    Transport,
    TransportError,
    TransportWriteFailed,
    check_batch,
    check_key,
    check_name,
    check_partition,
    encode_value,
)

T = TypeVar("T")

_MIN_DELAY = 0.0005  # first sleep of a blocked call, seconds
_MAX_DELAY = 0.02  # an idle waiter polls at 50 Hz at most
_BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    part TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_by_partition ON items (queue, part, id);
CREATE TABLE IF NOT EXISTS kv (
    dict TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (dict, key)
) WITHOUT ROWID;
"""


def _rollback(con: sqlite3.Connection) -> None:
    """Undo what a failed transaction did; after a failed COMMIT none may be left, and that
    second failure must not hide the first."""
    try:
        con.execute("ROLLBACK")
    except sqlite3.Error:
        pass


class LocalTransport(Transport):
    """Queues and dicts in one SQLite file; one connection per thread (and per process)."""

    name = "local"

    def __init__(self, path: Path | str, *, partition_cap: int = MAX_PARTITION_ITEMS) -> None:
        if not 1 <= partition_cap <= MAX_PARTITION_ITEMS:
            raise ValueError(f"partition_cap must be 1..{MAX_PARTITION_ITEMS}, got {partition_cap}")
        self.partition_cap = partition_cap
        self.path = Path(path)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.connection()  # fail now, with one line, if the file is not usable

    def queue(self, name: str) -> LocalQueue:
        return LocalQueue(self, check_name("queue", name))

    def dict(self, name: str) -> LocalDict:
        return LocalDict(self, check_name("dict", name))

    def connection(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is not None and self._local.pid == os.getpid():
            return con
        if self._closed:
            raise TransportError(f"local transport {self.path} is closed")
        con = self._open()
        self._local.con, self._local.pid = con, os.getpid()
        return con

    def _open(self) -> sqlite3.Connection:
        try:
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so no read ever has to
            # upgrade to a write (which WAL may refuse without waiting).
            con = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                check_same_thread=False,
            )
            con.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            con.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives any process crash; only power loss may
            # drop the last commits, never corrupt the file.
            con.execute("PRAGMA synchronous=NORMAL")
            con.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
        except sqlite3.DatabaseError as exc:
            raise TransportError(f"cannot open the local queue database {self.path}: {exc}") from None
        with self._lock:
            self._connections.append(con)
        return con

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the write lock from its first statement."""
        con = self.connection()
        try:
            con.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise self._write_failed(exc) from None
        try:
            yield con
        except sqlite3.OperationalError as exc:
            _rollback(con)
            raise self._write_failed(exc) from None
        except BaseException:
            _rollback(con)
            raise
        try:
            con.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            _rollback(con)
            raise self._write_failed(exc) from None

    def _write_failed(self, exc: sqlite3.OperationalError) -> TransportWriteFailed:
        """A write SQLite refused (a full disk, an I/O error, the lock still held after the busy
        timeout): one line naming the file; nothing of the transaction was committed."""
        return TransportWriteFailed(f"local queue database {self.path}: a write failed and nothing of "
                              f"it was stored ({exc})")

    def wait_for(
        self, attempt: Callable[[], T | None], *, block: bool, timeout: float | None
    ) -> T | None:
        """Call `attempt` until it returns non-None; None when not blocking; TimeoutError late."""
        con = self.connection()
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        delay = _MIN_DELAY
        while True:
            # Read the counter before the attempt, so a commit in between is never missed.
            seen = con.execute("PRAGMA data_version").fetchone()[0]
            result = attempt()
            if result is not None or not block:
                return result
            while True:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise TimeoutError
                time.sleep(delay if deadline is None else min(delay, deadline - now))
                delay = min(delay * 1.5, _MAX_DELAY)
                if con.execute("PRAGMA data_version").fetchone()[0] != seen:
                    delay = _MIN_DELAY
                    break

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for con in self._connections:
                con.close()
            self._connections.clear()
        self._local = threading.local()


class LocalQueue(Queue):
    def __init__(self, transport: LocalTransport, name: str) -> None:
        self._t = transport
        self.name = name

    def put_many(
        self, items: list[str], *, block: bool = True, timeout: float | None = None,
        partition: str | None = None,
    ) -> None:
        cap = self._t.partition_cap
        part, items = check_batch(items, partition, cap)
        if not items:
            return

        def attempt() -> bool | None:
            with self._t.write() as con:
                (count,) = con.execute(
                    "SELECT count(*) FROM items WHERE queue=? AND part=?", (self.name, part)
                ).fetchone()
                if count + len(items) > cap:
                    return None
                con.executemany(
                    "INSERT INTO items (queue, part, value) VALUES (?, ?, ?)",
                    [(self.name, part, item) for item in items],
                )
            return True

        try:
            done = self._t.wait_for(attempt, block=block, timeout=timeout)
        except TimeoutError:
            done = None
        if done is None:
            raise queue.Full(f"queue {self.name!r} partition {part!r} holds {cap}")

    def get_many(
        self, n_values: int, *, block: bool = True, timeout: float | None = None,
        partition: str | None = None,
    ) -> list[str]:
        part = check_partition(partition)
        if n_values < 1:
            raise ValueError(f"n_values must be at least 1, got {n_values}")
        try:
            items = self._t.wait_for(
                lambda: self._pop(n_values, part), block=block, timeout=timeout
            )
        except TimeoutError:
            raise queue.Empty from None
        return items or []

    def _pop(self, n: int, part: str) -> list[str] | None:
        con = self._t.connection()
        # Empty polls must not take the write lock: check with a plain read first.
        probe = con.execute(
            "SELECT 1 FROM items WHERE queue=? AND part=? LIMIT 1", (self.name, part)
        ).fetchone()
        if probe is None:
            return None
        with self._t.write() as con:
            rows = con.execute(
                "SELECT id, value FROM items WHERE queue=? AND part=? ORDER BY id LIMIT ?",
                (self.name, part, n),
            ).fetchall()
            if rows:
                con.execute(
                    "DELETE FROM items WHERE queue=? AND part=? AND id<=?",
                    (self.name, part, rows[-1][0]),
                )
        return [value for _, value in rows] or None

    def len(self, *, partition: str | None = None, total: bool = False) -> int:
        con = self._t.connection()
        if total:
            row = con.execute("SELECT count(*) FROM items WHERE queue=?", (self.name,))
        else:
            part = check_partition(partition)
            row = con.execute(
                "SELECT count(*) FROM items WHERE queue=? AND part=?", (self.name, part)
            )
        return int(row.fetchone()[0])

    def clear(self, *, partition: str | None = None, all: bool = False) -> None:
        with self._t.write() as con:
            if all:
                con.execute("DELETE FROM items WHERE queue=?", (self.name,))
            else:
                con.execute(
                    "DELETE FROM items WHERE queue=? AND part=?",
                    (self.name, check_partition(partition)),
                )


class LocalDict(Dict):
    def __init__(self, transport: LocalTransport, name: str) -> None:
        self._t = transport
        self.name = name

    def get(self, key: str, default: Any = None) -> Any:
        row = self._t.connection().execute(
            "SELECT value FROM kv WHERE dict=? AND key=?", (self.name, check_key(key))
        ).fetchone()
        return default if row is None else json.loads(row[0])

    def put(self, key: str, value: Any, *, skip_if_exists: bool = False) -> bool:
        text = encode_value(value)
        verb = "INSERT OR IGNORE" if skip_if_exists else "INSERT OR REPLACE"
        with self._t.write() as con:
            cur = con.execute(
                f"{verb} INTO kv (dict, key, value) VALUES (?, ?, ?)",  # fixed verbs
                (self.name, check_key(key), text),
            )
            return cur.rowcount == 1

    def pop(self, key: str) -> Any:
        with self._t.write() as con:
            row = con.execute(
                "DELETE FROM kv WHERE dict=? AND key=? RETURNING value", (self.name, check_key(key))
            ).fetchone()
        if row is None:
            raise KeyError(key)
        return json.loads(row[0])

    def contains(self, key: str) -> bool:
        row = self._t.connection().execute(
            "SELECT 1 FROM kv WHERE dict=? AND key=?", (self.name, check_key(key))
        ).fetchone()
        return row is not None

    def keys(self) -> list[str]:
        rows = self._t.connection().execute(
            "SELECT key FROM kv WHERE dict=? ORDER BY key", (self.name,)
        ).fetchall()
        return [key for (key,) in rows]

    def items(self) -> list[tuple[str, Any]]:
        rows = self._t.connection().execute(
            "SELECT key, value FROM kv WHERE dict=? ORDER BY key", (self.name,)
        ).fetchall()
        return [(key, json.loads(value)) for key, value in rows]

    def len(self) -> int:
        row = self._t.connection().execute("SELECT count(*) FROM kv WHERE dict=?", (self.name,))
        return int(row.fetchone()[0])
