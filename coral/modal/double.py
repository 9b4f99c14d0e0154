"""An in-memory double of the Modal API surface CORAL uses: offline tests, and the modal side
of `coral validate` (which is why it lives in the product, not in coral.testing).

`ModalDouble()` stands in for the `modal` module: `Queue`, `Dict`, `Function`, `Cls`,
`FunctionCall`, `Volume` and `exception`, with Modal's documented semantics (modal 1.6):

- Queue.get is an atomic pop with no acknowledgement; `get(block=False)` returns None when empty;
  `get(timeout=t)` raises queue.Empty. Items over 1 MiB raise RequestSizeError; a partition holds
  at most 5,000 items / 64 MiB (`put` retries until `timeout`, then raises queue.Full;
  `block=False` raises at once). A partition is cleared `partition_ttl` (24 h) after its last put,
  measured on an injectable clock. Partition keys are 1-64 bytes; None is the default partition.
- Dict.put(k, v, skip_if_exists=True) returns True only to the caller that created the key.
  No compare-and-swap. An entry neither read nor written for 7 days expires (same clock).
  Values over 1 MiB raise RequestSizeError.
- Named objects resolve lazily: `from_name(create_if_missing=False)` on a missing name fails on
  first use with NotFoundError, as Modal's lazy hydration does.
- Functions run in containers (threads): an input goes to an idle container or starts a new one
  (at most `max_containers`); a container serves inputs one at a time and exits after
  `scaledown_window` idle seconds. A class's @enter (its factory) runs once per container, with
  no function call id; `current_function_call_id()` is set only while an input runs. An @enter
  that raises fails an input with its exception, and the container is gone.
- An input whose body lets KeyboardInterrupt out (Modal preempts a container with SIGINT, and
  its runtime re-raises KeyboardInterrupt without sending an output) is not failed: the
  container exits and the input starts again in a new container, as Modal reschedules it.
- A function deployed with `retries=N` runs an input whose body raises an Exception again, under
  the same call id, up to N times (1 s, then twice as long each time, as modal.Retries' default),
  before `.get()` raises the last error; `FunctionCall.retries` counts them.
  `spawn_here` serves one input in the calling thread, the container's main thread, where a
  signal sent to the process lands (containers are otherwise threads, which signals never reach).
- Volumes: the committed state is a folder; each container mounts its own copy at start. Its
  writes reach the Volume only at `commit()`; others' commits appear only after `reload()`, which
  fails while the container holds a file of the view open or mapped. Where Modal is loose (it
  also commits in the background and at exit) the double is strict: code that passes here does
  not depend on timing there.

State lives in a `DoubleStore`, plain-typed so that a server process can host it: the tests'
cross-process server (coral/testing/modal_double.py) does, for workers a test kills with
SIGKILL. Values are stored as JSON text: CORAL sends JSON only, and JSON never runs code when
read.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import re
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.managers import BaseManager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modal.types import FileEntry, FunctionCurrentStats

MAX_ITEM_BYTES = 1024 * 1024
MAX_PARTITION_ITEMS = 5000
MAX_PARTITION_BYTES = 64 * 1024 * 1024
DEFAULT_PARTITION_TTL = 24 * 3600
DICT_IDLE_TTL = 7 * 24 * 3600  # a Dict entry neither read nor written for 7 days expires
# Blocking calls wait on the store in slices, as Modal's client re-issues long polls (50 s there):
# a client killed mid-wait then holds the store for at most one slice.
WAIT_SLICE = 0.5
_NAME = re.compile(r"^[a-zA-Z0-9_.-]+$")


def _modal_exception() -> ModuleType:
    # Imported on first use: the server process never needs modal, and importing it costs
    # most of a second in every process that starts.
    from modal import exception

    return exception


def _check_name(name: str, kind: str) -> str:
    if not (isinstance(name, str) and 0 < len(name) <= 64 and _NAME.match(name)):
        raise _modal_exception().InvalidError(
            f"Invalid {kind} name: {name!r}. Names may contain only alphanumeric characters, "
            "dashes, periods, and underscores, and must be shorter than 64 characters."
        )
    return name


def _partition_key(partition: str | None) -> str:
    if partition is None:
        return ""
    size = len(partition.encode("utf-8"))
    if size == 0 or size > 64:
        raise _modal_exception().InvalidError("Queue partition key must be between 1 and 64 characters.")
    return partition


def _encode(value: Any) -> tuple[str, int]:
    """JSON text and Modal-like size (a str counts its UTF-8 bytes, as the protocol does)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the Modal double stores JSON-compatible values only: {exc}") from None
    size = len(value.encode("utf-8")) if isinstance(value, str) else len(text.encode("utf-8"))
    return text, size


# ------------------------------------------------------------------------------------- the store


@dataclass
class _Partition:
    items: deque[tuple[str, int]] = field(default_factory=deque)
    nbytes: int = 0
    expires_at: float = float("inf")


class DoubleStore:
    """All queues and dicts of one fake Modal workspace. Thread-safe; plain-typed arguments only,
    so a manager proxy can forward every method."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or time.time
        self._offset = 0.0
        self._cond = threading.Condition()
        self._queues: dict[str, dict[str, _Partition]] = {}
        self._dicts: dict[str, dict[str, str]] = {}
        self._touched: dict[str, dict[str, float]] = {}  # dict -> key -> last read or write

    # clock: expiry is measured on it; blocking waits use real time
    def now(self) -> float:
        return self._clock() + self._offset

    def advance_clock(self, seconds: float) -> None:
        with self._cond:
            self._offset += seconds
            self._cond.notify_all()

    def ensure(self, kind: str, name: str, create_if_missing: bool) -> None:
        with self._cond:
            table: dict[str, Any] = self._queues if kind == "queue" else self._dicts
            if name not in table:
                if not create_if_missing:
                    raise LookupError(f"{kind.capitalize()} {name!r} not found")
                table[name] = {}

    def object_names(self, kind: str) -> list[str]:
        with self._cond:
            return sorted(self._queues if kind == "queue" else self._dicts)

    # queues ---------------------------------------------------------------------------------
    def _partitions(self, name: str) -> dict[str, _Partition]:
        try:
            parts = self._queues[name]
        except KeyError:
            raise LookupError(f"Queue {name!r} not found") from None
        now = self.now()
        for key in [k for k, p in parts.items() if p.expires_at <= now]:
            del parts[key]
        return parts

    def q_put(
        self, name: str, key: str, values: list[tuple[str, int]], ttl: float, wait: float
    ) -> bool:
        """Append all values, or none (False) if the partition stays full for `wait` seconds."""
        deadline = time.monotonic() + max(wait, 0.0)
        added = sum(size for _, size in values)
        with self._cond:
            while True:
                part = self._partitions(name).setdefault(key, _Partition())
                if (
                    len(part.items) + len(values) <= MAX_PARTITION_ITEMS
                    and part.nbytes + added <= MAX_PARTITION_BYTES
                ):
                    part.items.extend((text, size) for text, size in values)
                    part.nbytes += added
                    part.expires_at = self.now() + ttl
                    self._cond.notify_all()
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)

    def q_get(self, name: str, key: str, n: int, wait: float) -> list[str]:
        """Pop up to n values, waiting up to `wait` seconds for the first one."""
        deadline = time.monotonic() + max(wait, 0.0)
        with self._cond:
            while True:
                part = self._partitions(name).get(key)
                if part is not None and part.items:
                    out: list[str] = []
                    while part.items and len(out) < n:
                        text, size = part.items.popleft()
                        part.nbytes -= size
                        out.append(text)
                    self._cond.notify_all()
                    return out
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)

    def q_len(self, name: str, key: str, total: bool) -> int:
        with self._cond:
            parts = self._partitions(name)
            if total:
                return sum(len(p.items) for p in parts.values())
            part = parts.get(key)
            return len(part.items) if part else 0

    def q_partitions(self, name: str) -> list[str]:
        with self._cond:
            return sorted(k for k, p in self._partitions(name).items() if p.items)

    def q_clear(self, name: str, key: str, all_partitions: bool) -> None:
        with self._cond:
            parts = self._partitions(name)
            if all_partitions:
                parts.clear()
            else:
                parts.pop(key, None)
            self._cond.notify_all()

    # dicts ------------------------------------------------------------------------------------
    def _dict(self, name: str) -> dict[str, str]:
        """The live entries of dict `name`: an entry not read or written for DICT_IDLE_TTL
        seconds is gone, as on Modal (listing keys or items does not keep an entry alive)."""
        try:
            data = self._dicts[name]
        except KeyError:
            raise LookupError(f"Dict {name!r} not found") from None
        touched = self._touched.setdefault(name, {})
        cutoff = self.now() - DICT_IDLE_TTL
        for key in [k for k, t in touched.items() if t <= cutoff]:
            data.pop(key, None)
            del touched[key]
        return data

    def _touch(self, name: str, key: str) -> None:
        self._touched.setdefault(name, {})[key] = self.now()

    def d_get(self, name: str, key: str) -> tuple[bool, str | None]:
        with self._cond:
            data = self._dict(name)
            if key in data:
                self._touch(name, key)
            return (key in data, data.get(key))

    def d_put(self, name: str, key: str, text: str, skip_if_exists: bool) -> bool:
        with self._cond:
            data = self._dict(name)
            if skip_if_exists and key in data:
                return False
            data[key] = text
            self._touch(name, key)
            return True

    def d_pop(self, name: str, key: str) -> tuple[bool, str | None]:
        with self._cond:
            data = self._dict(name)
            if key not in data:
                return (False, None)
            self._touched.get(name, {}).pop(key, None)
            return (True, data.pop(key))

    def d_keys(self, name: str) -> list[str]:
        with self._cond:
            return list(self._dict(name))

    def d_items(self, name: str) -> list[tuple[str, str]]:
        with self._cond:
            return list(self._dict(name).items())

    def d_clear(self, name: str) -> None:
        with self._cond:
            self._dict(name).clear()
            self._touched.pop(name, None)


# ----------------------------------------------------------------------------- client handles


class _Named:
    kind = ""

    def __init__(self, store: DoubleStore, name: str, create_if_missing: bool) -> None:
        self._store = store
        self.name = name
        self._create = create_if_missing
        self._hydrated = False

    def _hydrate(self) -> None:
        # Lazy, as Modal's from_name: a missing object fails on first use, not at lookup.
        if not self._hydrated:
            try:
                self._store.ensure(self.kind, self.name, self._create)
            except LookupError as exc:
                raise _modal_exception().NotFoundError(str(exc)) from None
            self._hydrated = True


class DoubleQueue(_Named):
    kind = "queue"

    def put(
        self,
        v: Any,
        block: bool = True,
        timeout: float | None = None,
        *,
        partition: str | None = None,
        partition_ttl: int = DEFAULT_PARTITION_TTL,
    ) -> None:
        self.put_many([v], block, timeout, partition=partition, partition_ttl=partition_ttl)

    def put_many(
        self,
        vs: list[Any],
        block: bool = True,
        timeout: float | None = None,
        *,
        partition: str | None = None,
        partition_ttl: int = DEFAULT_PARTITION_TTL,
    ) -> None:
        key = _partition_key(partition)
        values = [_encode(v) for v in vs]
        for _, size in values:
            if size > MAX_ITEM_BYTES:
                method = "put_many" if len(vs) > 1 else "put"
                raise _modal_exception().RequestSizeError(f"Queue.{method} request is too large")
        self._hydrate()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = 0.0 if not block else WAIT_SLICE
            if deadline is not None:
                wait = min(wait, max(deadline - time.monotonic(), 0.0))
            if self._store.q_put(self.name, key, values, partition_ttl, wait):
                return
            if not block or (deadline is not None and time.monotonic() >= deadline):
                raise queue.Full(f"Queue {self.name!r} partition {key!r} is full")

    def get(
        self, block: bool = True, timeout: float | None = None, *, partition: str | None = None
    ) -> Any | None:
        values = self.get_many(1, block, timeout, partition=partition)
        return values[0] if values else None

    def get_many(
        self, n_values: int, block: bool = True, timeout: float | None = None, *,
        partition: str | None = None,
    ) -> list[Any]:
        key = _partition_key(partition)
        self._hydrate()
        if not block:
            return [json.loads(t) for t in self._store.q_get(self.name, key, n_values, 0.0)]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = WAIT_SLICE
            if deadline is not None:
                wait = min(wait, max(deadline - time.monotonic(), 0.0))
            texts = self._store.q_get(self.name, key, n_values, wait)
            if texts:
                return [json.loads(t) for t in texts]
            if deadline is not None and time.monotonic() >= deadline:
                raise queue.Empty()

    def len(self, *, partition: str | None = None, total: bool = False) -> int:
        if partition and total:
            raise _modal_exception().InvalidError("Partition must be null when requesting total length.")
        key = _partition_key(partition)
        self._hydrate()
        return self._store.q_len(self.name, key, total)

    def clear(self, *, partition: str | None = None, all: bool = False) -> None:
        if partition and all:
            raise _modal_exception().InvalidError("Partition must be null when requesting to clear all.")
        key = _partition_key(partition)
        self._hydrate()
        self._store.q_clear(self.name, key, all)

    def partitions(self) -> list[str]:
        """Test helper (not in Modal): non-empty partition keys, '' for the default one."""
        self._hydrate()
        return self._store.q_partitions(self.name)


def _check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"the Modal double supports str keys only, got {type(key).__name__}")
    return key


class DoubleDict(_Named):
    kind = "dict"

    def get(self, key: str, default: Any = None) -> Any:
        self._hydrate()
        found, text = self._store.d_get(self.name, _check_key(key))
        return json.loads(text) if found and text is not None else default

    def put(self, key: str, value: Any, *, skip_if_exists: bool = False) -> bool:
        text, size = _encode(value)
        if size > MAX_ITEM_BYTES:
            raise _modal_exception().RequestSizeError("Dict.put request is too large")
        self._hydrate()
        return self._store.d_put(self.name, _check_key(key), text, skip_if_exists)

    _MISSING = object()

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        self._hydrate()
        found, text = self._store.d_pop(self.name, _check_key(key))
        if not found or text is None:
            if default is not DoubleDict._MISSING:
                return default
            raise KeyError(f"{key} not in dict {self.name}")
        return json.loads(text)

    def contains(self, key: str) -> bool:
        self._hydrate()
        return self._store.d_get(self.name, _check_key(key))[0]

    def keys(self) -> Iterator[str]:
        self._hydrate()
        return iter(self._store.d_keys(self.name))

    def items(self) -> Iterator[tuple[str, Any]]:
        self._hydrate()
        return iter([(k, json.loads(t)) for k, t in self._store.d_items(self.name)])

    def len(self) -> int:
        self._hydrate()
        return len(self._store.d_keys(self.name))

    def clear(self) -> None:
        self._hydrate()
        self._store.d_clear(self.name)

    def __getitem__(self, key: str) -> Any:
        missing = object()
        value = self.get(key, missing)
        if value is missing:
            raise KeyError(f"{key} not in dict {self.name}")
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self.put(key, value)

    def __contains__(self, key: str) -> bool:
        return self.contains(key)


class _ObjectFactory:
    """`api.Queue` / `api.Dict`: only `from_name`, as Modal's constructors are forbidden."""

    def __init__(self, store: DoubleStore, handle: type[_Named], kind: str) -> None:
        self._store, self._handle, self._kind = store, handle, kind

    def from_name(
        self, name: str, *, environment_name: str | None = None, create_if_missing: bool = False,
        client: Any = None,
    ) -> Any:
        return self._handle(self._store, _check_name(name, self._kind), create_if_missing)


# ----------------------------------------------------------------------------------- functions

# What a double container thread is doing: `.container` (the DoubleContainer it belongs to) and
# `.call_id` (the input it serves right now; None in @enter and between inputs, as on Modal).
_CURRENT = threading.local()
DEFAULT_SCALEDOWN = 60.0  # Modal's default scaledown_window
# Real containers are processes; here they are threads, and model loading patches process-wide
# state (transformers' meta-device init), so @enter runs one container at a time.
_ENTER_LOCK = threading.Lock()


class DoubleFunctionCall:
    """A spawned call: `get(timeout)` raises TimeoutError while running, as Modal's does."""

    _ids = itertools.count(1)

    def __init__(self) -> None:
        self.object_id = f"fc-double-{next(self._ids):06d}"
        self._done = threading.Event()
        self._result: Any = None
        self._error: BaseException | None = None
        self.cancelled = False
        self.restarts = 0  # times its input was interrupted (preempted) and started again
        self.retries = 0  # times its input raised and was run again (the function's `retries`)

    def _finish(self, result: Any, error: BaseException | None) -> None:
        self._result, self._error = result, error
        self._done.set()

    def get(self, timeout: float | None = None) -> Any:
        if not self._done.wait(timeout):
            raise TimeoutError()
        if self._error is not None:
            raise self._error
        return self._result

    def cancel(self, terminate_containers: bool = False) -> None:
        # Threads cannot be interrupted: a call that has not started never will; a running one
        # runs on (CORAL's worker loops exit by themselves when idle).
        self.cancelled = True


@dataclass
class _Input:
    call: DoubleFunctionCall
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    failures: int = 0  # attempts that raised


class DoubleContainer:
    """One container of a function: a thread that runs @enter once, then serves inputs one at a
    time until `scaledown_window` seconds pass without one. It mounts its own view of each
    Volume the function declares."""

    _ids = itertools.count(1)

    def __init__(self, pool: _Pool) -> None:
        self.container_id = f"ta-double-{next(self._ids):06d}"
        self.pool = pool
        self.views: dict[str, _View] = {}
        self.instance: Any = None
        self.inputs = 0  # inputs served
        self.exited = threading.Event()


class _Pool:
    """The containers of one function (or one class with one set of parameters): inputs queue up
    and go to an idle container, or to a new one while fewer than `max_containers` run."""

    def __init__(
        self, name: str, body: Callable[..., Any], *, enter: Callable[[], Any] | None,
        max_containers: int | None, scaledown_window: float, volume_names: tuple[str, ...],
        volumes: _VolumeFactory, retries: int = 0, retry_delay: float = 1.0,
    ) -> None:
        self.name = name
        self.retries = retries  # Modal's `retries`: attempts after an input raised
        self.retry_delay = retry_delay  # before the first of them; doubling, at most 60 s
        self._body = body  # body(instance, *args, **kwargs)
        self._enter = enter
        self.max_containers = max_containers
        self.scaledown_window = scaledown_window
        self.volume_names = volume_names
        self._volumes = volumes
        self.lock = threading.Condition()
        self._inputs: deque[_Input] = deque()
        self.containers: list[DoubleContainer] = []  # live ones
        self._idle = 0
        self.started = 0  # containers ever started (each ran @enter once)
        self.running = 0  # inputs running now
        self.peak = 0  # most containers alive at once (tests check the cap)

    def submit(self, item: _Input) -> None:
        with self.lock:
            self._inputs.append(item)
            self._scale()
            self.lock.notify_all()

    def _scale(self) -> None:
        # Called with the lock held: start containers for inputs no idle container will take.
        while self._idle < len(self._inputs) and (
            self.max_containers is None or len(self.containers) < self.max_containers
        ):
            container = DoubleContainer(self)
            self.containers.append(container)
            self.started += 1
            self.peak = max(self.peak, len(self.containers))
            self._idle += 1  # counted idle until it takes its first input
            threading.Thread(target=self._main, args=(container,), daemon=True,
                             name=f"double-{self.name}-{container.container_id}").start()

    def stats(self) -> tuple[int, int]:
        with self.lock:
            return len(self._inputs), len(self.containers)

    def _take(self) -> _Input | None:
        with self.lock:
            deadline = time.monotonic() + self.scaledown_window
            while not self._inputs:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.lock.wait(remaining)
            self._idle -= 1
            self.running += 1
            return self._inputs.popleft()

    def _main(self, container: DoubleContainer) -> None:
        _CURRENT.container, _CURRENT.call_id = container, None
        try:
            try:
                for name in self.volume_names:
                    container.views[name] = self._volumes.state(name).mount()
                if self._enter is not None:
                    with _ENTER_LOCK:
                        container.instance = self._enter()  # no input yet: no call id
            except BaseException as exc:  # the container crashes at start; an input sees why
                self._fail_one(exc)
                return
            while True:
                item = self._take()
                if item is None:
                    return
                interrupted = self._serve(container, item)
                with self.lock:
                    self.running -= 1
                    self._idle += 1
                if interrupted:
                    return  # an interrupted container is gone
        finally:
            _CURRENT.container = _CURRENT.call_id = None
            for view in container.views.values():
                view.unmount()
            with self.lock:
                self.containers.remove(container)
                self._idle -= 1
                self._scale()  # inputs left behind by a crashed container get a new one
            container.exited.set()

    def _fail_one(self, exc: BaseException) -> None:
        with self.lock:
            item = self._inputs.popleft() if self._inputs else None
        if item is not None:
            item.call._finish(None, exc)

    def _serve(self, container: DoubleContainer, item: _Input) -> bool:
        """Run one input; True when it was interrupted (and so rescheduled)."""
        call = item.call
        if call.cancelled:
            call._finish(None, _modal_exception().InputCancellation("cancelled before start"))
            return False
        _CURRENT.call_id = call.object_id
        container.inputs += 1
        try:
            call._finish(self._body(container.instance, *item.args, **item.kwargs), None)
        except KeyboardInterrupt:
            # No output, as Modal's runtime sends none for KeyboardInterrupt: the input runs
            # again in a new container (modal/_runtime/container_io_manager.py).
            call.restarts += 1
            self.submit(item)
            return True
        except Exception as exc:
            if item.failures < self.retries:  # Modal runs it again after a delay, same call id
                delay = min(self.retry_delay * 2 ** item.failures, 60.0)
                item.failures += 1
                call.retries += 1
                timer = threading.Timer(delay, self.submit, args=(item,))
                timer.daemon = True
                timer.start()
            else:  # delivered to .get(), as Modal does
                call._finish(None, exc)
        except BaseException as exc:  # a container crash the double cannot restart: to .get()
            call._finish(None, exc)
        finally:
            _CURRENT.call_id = None
        return False

    def serve_here(self, item: _Input) -> None:
        """Serve `item` in a new container whose main thread is the calling thread: signals sent
        to this process reach it there, as they reach a Modal container's main thread."""
        container = DoubleContainer(self)
        with self.lock:
            self.containers.append(container)
            self.started += 1
            self.peak = max(self.peak, len(self.containers))
            self.running += 1
        outer = getattr(_CURRENT, "container", None), getattr(_CURRENT, "call_id", None)
        _CURRENT.container, _CURRENT.call_id = container, None
        try:
            try:
                for name in self.volume_names:
                    container.views[name] = self._volumes.state(name).mount()
                if self._enter is not None:
                    with _ENTER_LOCK:
                        container.instance = self._enter()
            except BaseException as exc:
                item.call._finish(None, exc)
                return
            self._serve(container, item)
        finally:
            _CURRENT.container, _CURRENT.call_id = outer
            for view in container.views.values():
                view.unmount()
            with self.lock:
                self.containers.remove(container)
                self.running -= 1
                self._scale()  # a rescheduled input may wait for this container's slot
            container.exited.set()


class DoubleFunction:
    """A deployed function (or a class method): `spawn` queues an input for its containers."""

    def __init__(self, name: str, pool: _Pool, deployed: _Deployed) -> None:
        self.name = name
        self.pool = pool
        self._deployed = deployed
        self.calls: list[DoubleFunctionCall] = []

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self.spawn(*args, **kwargs).get()

    def _input(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Input:
        call = DoubleFunctionCall()
        self.calls.append(call)
        self._deployed.calls[call.object_id] = call
        return _Input(call, args, kwargs)

    def spawn(self, *args: Any, **kwargs: Any) -> DoubleFunctionCall:
        item = self._input(args, kwargs)
        self.pool.submit(item)
        return item.call

    def spawn_here(self, *args: Any, **kwargs: Any) -> DoubleFunctionCall:
        """Not in Modal: spawn, with the input's first container running in this thread (see
        _Pool.serve_here); returns once that container is done, the call finished or, if the
        input was interrupted, started again in a new container."""
        item = self._input(args, kwargs)
        self.pool.serve_here(item)
        return item.call

    def get_current_stats(self) -> FunctionCurrentStats:
        from modal.types import FunctionCurrentStats

        backlog, runners = self.pool.stats()
        return FunctionCurrentStats(backlog=backlog, num_total_runners=runners,
                                    num_running_inputs=self.pool.running, input_headroom=0)


class DoubleCls:
    """A deployed class: `Cls(**params).method.spawn(...)`. `factory(**params)` plays
    @modal.enter: it runs once per container, before the container's first input and without a
    call id. Each set of parameters has its own containers, as on Modal."""

    def __init__(self, name: str, factory: Callable[..., Any], deployed: _Deployed,
                 options: dict[str, Any]) -> None:
        self.name = name
        self._factory = factory
        self._deployed = deployed
        self._options = options
        self.pools: dict[str, _Pool] = {}
        self.calls: list[DoubleFunctionCall] = []

    def pool(self, params: dict[str, Any]) -> _Pool:
        key = json.dumps(params, sort_keys=True)
        if key not in self.pools:
            self.pools[key] = _Pool(
                f"{self.name}({key})", lambda obj, method, *a, **k: getattr(obj, method)(*a, **k),
                enter=lambda: self._factory(**params), volumes=self._deployed.volumes,
                **self._options)
        return self.pools[key]

    def __call__(self, **params: Any) -> _DoubleObj:
        return _DoubleObj(self, params)


class _DoubleObj:
    def __init__(self, cls: DoubleCls, params: dict[str, Any]) -> None:
        self._cls, self._params = cls, params

    def __getattr__(self, method: str) -> _BoundMethod:
        if method.startswith("_"):
            raise AttributeError(method)
        return _BoundMethod(self._cls, self._cls.pool(self._params), method)


class _BoundMethod(DoubleFunction):
    def __init__(self, cls: DoubleCls, pool: _Pool, method: str) -> None:
        super().__init__(f"{cls.name}.{method}", pool, cls._deployed)
        self.calls = cls.calls
        self._method = method

    def _input(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Input:
        return super()._input((self._method, *args), kwargs)


class _Deployed:
    """`api.Function` / `api.Cls` lookups, and what tests register as deployed."""

    def __init__(self, volumes: _VolumeFactory) -> None:
        self.volumes = volumes
        self.functions: dict[tuple[str, str], DoubleFunction] = {}
        self.classes: dict[tuple[str, str], DoubleCls] = {}
        self.calls: dict[str, DoubleFunctionCall] = {}

    def register(self, app_name: str, name: str, body: Callable[..., Any], *,
                 max_containers: int | None = None, scaledown_window: float = DEFAULT_SCALEDOWN,
                 volumes: tuple[str, ...] = (), restrict_output: bool = False,
                 retries: int = 0, retry_delay: float = 1.0) -> DoubleFunction:
        """Deploy `body` as function `name`; its containers mount `volumes` (Volume names).
        `restrict_output` (Modal's `_experimental_restrict_output`): its return values travel
        as CBOR, never pickle, so one CBOR cannot encode fails the input as Modal's does.
        `retries`: Modal's, an input that raised runs again (the first time after
        `retry_delay` seconds)."""
        run = _cbor_output(body) if restrict_output else body
        pool = _Pool(name, lambda _instance, *a, **k: run(*a, **k), enter=None,
                     max_containers=max_containers, scaledown_window=scaledown_window,
                     volume_names=tuple(volumes), volumes=self.volumes, retries=retries,
                     retry_delay=retry_delay)
        fn = DoubleFunction(name, pool, self)
        self.functions[(app_name, name)] = fn
        return fn

    def register_cls(self, app_name: str, name: str, factory: Callable[..., Any], *,
                     max_containers: int | None = None,
                     scaledown_window: float = DEFAULT_SCALEDOWN,
                     volumes: tuple[str, ...] = (), retries: int = 0) -> DoubleCls:
        cls = DoubleCls(name, factory, self, dict(
            max_containers=max_containers, scaledown_window=scaledown_window,
            volume_names=tuple(volumes), retries=retries))
        self.classes[(app_name, name)] = cls
        return cls

    def _missing(self, app_name: str, kind: str, name: str) -> str:
        # modal/_functions.py and modal/cls.py wrap the server's NotFoundError like this; the
        # server's own words (after the colon) are the double's best guess.
        apps = {app for app, _ in [*self.functions, *self.classes]}
        why = (f"App '{app_name}' not found in environment 'main'" if app_name not in apps
               else f"{kind} '{name}' not found in app '{app_name}'")
        return f"Lookup failed for {kind} '{name}' from the '{app_name}' app: {why}."

    def function(self, app_name: str, name: str) -> DoubleFunction:
        try:
            return self.functions[(app_name, name)]
        except KeyError:
            raise _modal_exception().NotFoundError(
                self._missing(app_name, "Function", name)) from None

    def cls(self, app_name: str, name: str) -> DoubleCls:
        try:
            return self.classes[(app_name, name)]
        except KeyError:
            raise _modal_exception().NotFoundError(self._missing(app_name, "Cls", name)) from None

    def call(self, function_call_id: str) -> DoubleFunctionCall:
        try:
            return self.calls[function_call_id]
        except KeyError:
            raise _modal_exception().NotFoundError(
                f"Lookup failed for FunctionCall {function_call_id!r}") from None


def _cbor_output(body: Callable[..., Any]) -> Callable[..., Any]:
    from modal._serialization import deserialize_data_format, serialize_data_format
    from modal_proto import api_pb2

    def run(*args: Any, **kwargs: Any) -> Any:
        data = serialize_data_format(body(*args, **kwargs), api_pb2.DATA_FORMAT_CBOR)
        return deserialize_data_format(data, api_pb2.DATA_FORMAT_CBOR, None)

    return run


class _Lazy:
    """A handle resolved on first use, as modal 1.6.4's `from_name`/`from_id` handles are
    (`hydrate_lazily=True`): a missing object raises NotFoundError there, not at the lookup,
    and a failed resolution is tried again at the next use."""

    def __init__(self, resolve: Callable[[], Any]) -> None:
        self._resolve = resolve
        self._target: Any = None

    def _get(self) -> Any:
        if self._target is None:
            self._target = self._resolve()
        return self._target

    def hydrate(self) -> Any:
        self._get()
        return self

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._get(), name)


class _LazyCls(_Lazy):
    def __call__(self, **params: Any) -> _LazyObj:
        return _LazyObj(self, params)


class _LazyObj:
    def __init__(self, cls: _LazyCls, params: dict[str, Any]) -> None:
        self._cls, self._params = cls, params

    def __getattr__(self, method: str) -> _Lazy:
        if method.startswith("_"):
            raise AttributeError(method)
        return _Lazy(lambda: getattr(self._cls._get()(**self._params), method))


class _FunctionFactory:
    def __init__(self, deployed: _Deployed | _CloudDeployed) -> None:
        self._deployed = deployed

    def from_name(self, app_name: str, name: str, *, environment_name: str | None = None,
                  **_: Any) -> Any:
        return _Lazy(lambda: self._deployed.function(app_name, name))


class _ClsFactory:
    def __init__(self, deployed: _Deployed | _CloudDeployed) -> None:
        self._deployed = deployed

    def from_name(self, app_name: str, name: str, *, environment_name: str | None = None,
                  **_: Any) -> Any:
        return _LazyCls(lambda: self._deployed.cls(app_name, name))


class _FunctionCallFactory:
    def __init__(self, deployed: _Deployed | _CloudDeployed) -> None:
        self._deployed = deployed

    def from_id(self, function_call_id: str, client: Any = None) -> Any:
        return _Lazy(lambda: self._deployed.call(function_call_id))


# ------------------------------------------------------------------ functions in another process


class _CloudCall:
    """A FunctionCall whose function runs in the DoubleServer's process (the double's cloud)."""

    def __init__(self, cloud: Any, object_id: str) -> None:
        self._cloud, self.object_id = cloud, object_id

    def get(self, timeout: float | None = None) -> Any:
        return json.loads(self._cloud.call_get(self.object_id, timeout))

    def cancel(self, terminate_containers: bool = False) -> None:
        self._cloud.call_cancel(self.object_id)


class _CloudFunction:
    """A deployed function (or a method of a deployed class with `params`) of the cloud."""

    def __init__(self, cloud: Any, app_name: str, name: str, params: str | None = None,
                 method: str | None = None) -> None:
        self._cloud, self._where = cloud, (app_name, name, params, method)

    def spawn(self, *args: Any, **kwargs: Any) -> _CloudCall:
        # Arguments and results cross processes as JSON (CORAL passes JSON-able values only).
        return _CloudCall(self._cloud, self._cloud.spawn(*self._where, json.dumps([args, kwargs])))

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self.spawn(*args, **kwargs).get()

    def get_current_stats(self) -> FunctionCurrentStats:
        from modal.types import FunctionCurrentStats

        backlog, runners, running = self._cloud.stats(*self._where)
        return FunctionCurrentStats(backlog=backlog, num_total_runners=runners,
                                    num_running_inputs=running, input_headroom=0)


class _CloudObj:
    def __init__(self, cloud: Any, app_name: str, name: str, params: dict[str, Any]) -> None:
        self._cloud, self._app, self._name = cloud, app_name, name
        self._params = json.dumps(params, sort_keys=True)

    def __getattr__(self, method: str) -> _CloudFunction:
        if method.startswith("_"):
            raise AttributeError(method)
        return _CloudFunction(self._cloud, self._app, self._name, self._params, method)


class _CloudCls:
    def __init__(self, cloud: Any, app_name: str, name: str) -> None:
        self._cloud, self._app, self._name = cloud, app_name, name

    def __call__(self, **params: Any) -> _CloudObj:
        return _CloudObj(self._cloud, self._app, self._name, params)


class _CloudDeployed:
    """`api.Function` / `api.Cls` / `api.FunctionCall` lookups answered by a DoubleCloud in
    another process (coral/testing/modal_double.py), where the deployed functions run."""

    def __init__(self, cloud: Any) -> None:
        self._cloud = cloud

    def function(self, app_name: str, name: str) -> _CloudFunction:
        self._cloud.lookup(app_name, "Function", name)  # NotFoundError as the local lookup's
        return _CloudFunction(self._cloud, app_name, name)

    def cls(self, app_name: str, name: str) -> _CloudCls:
        self._cloud.lookup(app_name, "Cls", name)
        return _CloudCls(self._cloud, app_name, name)

    def call(self, function_call_id: str) -> _CloudCall:
        self._cloud.lookup_call(function_call_id)
        return _CloudCall(self._cloud, function_call_id)


class DoubleCloud:
    """The deployed apps of a process that stands in for Modal's cloud: their functions run
    here (containers as threads), and other processes reach them through `_CloudDeployed`.
    Each app runs on its own ModalDouble over `store`, with the Volumes of its deploy."""

    def __init__(self, store: DoubleStore) -> None:
        self._store = store
        self._apps: dict[str, ModalDouble] = {}
        self._calls: dict[str, DoubleFunctionCall] = {}
        self._lock = threading.Lock()

    def api(self, app_name: str, volume_root: str) -> ModalDouble:
        """The ModalDouble to deploy app `app_name` on (a new one replaces an earlier deploy)."""
        with self._lock:
            self._apps[app_name] = ModalDouble(self._store, volume_root=volume_root)
            return self._apps[app_name]

    def _deployed(self, app_name: str) -> _Deployed:
        api = self._apps.get(app_name)
        return api.deployed if api is not None else _Deployed(_VolumeFactory(None))

    def lookup(self, app_name: str, kind: str, name: str) -> None:
        deployed = self._deployed(app_name)
        deployed.cls(app_name, name) if kind == "Cls" else deployed.function(app_name, name)

    def lookup_call(self, function_call_id: str) -> None:
        with self._lock:
            if function_call_id not in self._calls:
                raise _modal_exception().NotFoundError(
                    f"Lookup failed for FunctionCall {function_call_id!r}")

    def _function(self, app_name: str, name: str, params: str | None,
                  method: str | None) -> DoubleFunction:
        deployed = self._deployed(app_name)
        if method is None:
            return deployed.function(app_name, name)
        return getattr(deployed.cls(app_name, name)(**json.loads(params or "{}")), method)

    def spawn(self, app_name: str, name: str, params: str | None, method: str | None,
              arguments: str) -> str:
        args, kwargs = json.loads(arguments)
        call = self._function(app_name, name, params, method).spawn(*args, **kwargs)
        with self._lock:
            self._calls[call.object_id] = call
        return call.object_id

    def call_get(self, function_call_id: str, timeout: float | None) -> str:
        self.lookup_call(function_call_id)
        return json.dumps(self._calls[function_call_id].get(timeout))

    def call_cancel(self, function_call_id: str) -> None:
        self.lookup_call(function_call_id)
        self._calls[function_call_id].cancel()

    def stats(self, app_name: str, name: str, params: str | None,
              method: str | None) -> tuple[int, int, int]:
        function = self._function(app_name, name, params, method)
        backlog, runners = function.pool.stats()
        return backlog, runners, function.pool.running


# ------------------------------------------------------------------------------------- volumes


def _snapshot(root: Path) -> tuple[dict[str, tuple[int, int]], set[str]]:
    """Files (relative path -> size, mtime_ns) and folders under root."""
    files: dict[str, tuple[int, int]] = {}
    dirs: set[str] = set()
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_dir() and not path.is_symlink():
            dirs.add(rel)
        else:
            st = path.lstat()
            files[rel] = (st.st_size, st.st_mtime_ns)
    return files, dirs


def _open_paths_under(root: Path) -> list[str]:
    """Files under root this process holds open or mapped (Modal refuses to reload then)."""
    prefix = str(root) + os.sep
    found: list[str] = []
    fd_dir = Path("/proc/self/fd")
    if fd_dir.is_dir():
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith(prefix):
                found.append(target)
    maps = Path("/proc/self/maps")
    if maps.is_file():
        for line in maps.read_text(errors="replace").splitlines():
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith(prefix):
                found.append(parts[5])
    return sorted(set(found))


class _VolumeState:
    """A Volume's committed state: the folder `root`. Containers mount views of it."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root
        self.lock = threading.Lock()
        self.commits = 0
        self.reloads = 0

    def mount(self) -> _View:
        view = _View(self, Path(tempfile.mkdtemp(prefix=f"modal-double-{self.name}-")))
        view.refresh()
        return view


class _View:
    """One container's copy of a Volume: others' commits appear only after `reload`, and its
    own writes reach the Volume only at `commit` (last writer wins per file, as on Modal)."""

    def __init__(self, state: _VolumeState, path: Path) -> None:
        self.state = state
        self.path = path
        self._files: dict[str, tuple[int, int]] = {}
        self._dirs: set[str] = set()

    def refresh(self) -> None:
        with self.state.lock:
            for child in self.path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
            shutil.copytree(self.state.root, self.path, dirs_exist_ok=True)
            self._files, self._dirs = _snapshot(self.path)

    def commit(self) -> None:
        """Publish this view's writes; then, as modal 1.6.4's commit, reload, which fails
        (RuntimeError) while this container holds a file of the view open or mapped: the
        writes are committed all the same."""
        self._push()
        with self.state.lock:
            self.state.commits += 1
        self._refuse_open_files()
        self.refresh()

    def _refuse_open_files(self) -> None:
        held = _open_paths_under(self.path)
        if held:
            rel = Path(held[0]).relative_to(self.path).as_posix()
            raise RuntimeError(
                f"there are open files preventing the operation: {rel} is open in this container")

    def _push(self) -> None:
        files, dirs = _snapshot(self.path)
        root = self.state.root
        with self.state.lock:
            for rel in set(self._files) - set(files):
                (root / rel).unlink(missing_ok=True)
            for rel in sorted(self._dirs - dirs, reverse=True):
                shutil.rmtree(root / rel, ignore_errors=True)
            for rel in sorted(dirs - self._dirs):
                (root / rel).mkdir(parents=True, exist_ok=True)
            for rel, stat in files.items():
                if self._files.get(rel) != stat:
                    (root / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(self.path / rel, root / rel)
        self._files, self._dirs = files, dirs

    def reload(self) -> None:
        self._refuse_open_files()
        self._push()  # Modal may commit pending changes on reload; the double always does
        self.refresh()
        with self.state.lock:
            self.state.reloads += 1

    def unmount(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class DoubleVolume:
    """A Volume handle. Inside a container that mounts it, `commit`/`reload` act on that
    container's view and `path` is the view's folder (the mount point); elsewhere `path` is the
    committed state and `listdir`/`read_file` read it, as Modal's API calls do."""

    def __init__(self, factory: _VolumeFactory, name: str, create_if_missing: bool) -> None:
        self._factory, self.name, self._create = factory, name, create_if_missing
        self._resolved: _VolumeState | None = None

    @property
    def _state(self) -> _VolumeState:
        # Lazy, as modal.Volume.from_name: a missing Volume fails on first use (NotFoundError),
        # and create_if_missing creates it then.
        if self._resolved is None:
            self._resolved = self._factory.state(self.name, self._create)
        return self._resolved

    def hydrate(self) -> DoubleVolume:
        self._state  # noqa: B018 - resolving is the point
        return self

    def _view(self, what: str) -> _View:
        container = getattr(_CURRENT, "container", None)
        view = container.views.get(self.name) if container is not None else None
        if view is None:
            raise RuntimeError(f"Volume.{what}() can only be called inside a container that "
                               f"mounts volume {self.name!r}")
        return view

    @property
    def path(self) -> Path:
        container = getattr(_CURRENT, "container", None)
        view = container.views.get(self.name) if container is not None else None
        return view.path if view is not None else self._state.root

    @property
    def commits(self) -> int:
        return self._state.commits

    @property
    def reloads(self) -> int:
        return self._state.reloads

    def commit(self) -> None:
        self._view("commit").commit()

    def reload(self) -> None:
        self._view("reload").reload()

    def listdir(self, path: str, *, recursive: bool = False) -> list[FileEntry]:
        from modal.types import FileEntry, FileEntryType

        root = self._state.root
        base = root / path.strip("/")
        if not base.exists():
            raise _modal_exception().NotFoundError(f"No such file or directory: {path}")
        children = sorted(base.rglob("*") if recursive else base.iterdir())
        return [
            FileEntry(
                path=str(p.relative_to(root)),
                type=FileEntryType.DIRECTORY if p.is_dir() else FileEntryType.FILE,
                mtime=int(p.stat().st_mtime),
                size=0 if p.is_dir() else p.stat().st_size,
            )
            for p in children
        ]

    def read_file(self, path: str) -> Iterator[bytes]:
        """A generator, as modal 1.6.4's: nothing happens until the first chunk is asked for,
        and a missing file then raises the builtin FileNotFoundError (modal/volume.py turns
        the server's NotFoundError into it)."""
        target = self._state.root / path.strip("/")
        if not target.is_file():
            raise FileNotFoundError(f"No such file: {path}")
        yield target.read_bytes()


class _VolumeFactory:
    def __init__(self, root: Path | None) -> None:
        self._root = root
        self._states: dict[str, _VolumeState] = {}
        self._lock = threading.Lock()

    def state(self, name: str, create_if_missing: bool = False) -> _VolumeState:
        _check_name(name, "Volume")
        if self._root is None:
            raise _modal_exception().NotFoundError("this Modal double has no volume_root")
        with self._lock:
            if name not in self._states:
                path = self._root / name
                if not path.exists():
                    if not create_if_missing:
                        raise _modal_exception().NotFoundError(f"Volume {name!r} not found")
                    path.mkdir(parents=True)
                self._states[name] = _VolumeState(name, path)
            return self._states[name]

    def from_name(self, name: str, *, environment_name: str | None = None,
                  create_if_missing: bool = False, **_: Any) -> DoubleVolume:
        return DoubleVolume(self, _check_name(name, "Volume"), create_if_missing)


# -------------------------------------------------------------------------------- the module


class ModalDouble:
    """Stands in for the `modal` module (pass it as `api=`)."""

    def __init__(
        self,
        store: DoubleStore | None = None,
        *,
        clock: Callable[[], float] | None = None,
        volume_root: Path | str | None = None,
        cloud: Any = None,
    ) -> None:
        """`cloud`: a DoubleCloud (in practice its proxy in another process) whose deployed
        functions `Function`, `Cls` and `FunctionCall` reach; None: those of `deployed`."""
        self.store = store if store is not None else DoubleStore(clock)
        self.Volume = _VolumeFactory(Path(volume_root) if volume_root is not None else None)
        self.deployed = _Deployed(self.Volume)
        self.Queue = _ObjectFactory(self.store, DoubleQueue, "Queue")
        self.Dict = _ObjectFactory(self.store, DoubleDict, "Dict")
        lookups: _Deployed | _CloudDeployed = self.deployed if cloud is None else _CloudDeployed(cloud)
        self.Function = _FunctionFactory(lookups)
        self.Cls = _ClsFactory(lookups)
        self.FunctionCall = _FunctionCallFactory(lookups)

    @property
    def exception(self) -> ModuleType:
        """Modal's own exception classes, as `modal.exception`."""
        return _modal_exception()

    def advance_clock(self, seconds: float) -> None:
        self.store.advance_clock(seconds)

    @staticmethod
    def current_function_call_id() -> str | None:
        """As modal.current_function_call_id: the input this container thread serves now;
        None outside a container, in @enter, and between inputs."""
        return getattr(_CURRENT, "call_id", None)


class _DoubleClientManager(BaseManager):
    pass


# The typeids coral/testing/modal_double.py's server serves (it registers their callables).
_DoubleClientManager.register("store")
_DoubleClientManager.register("cloud")


def connect_handle(path: Path | str) -> ModalDouble:
    """A test hook: the ModalDouble of the handle file `path` that DoubleServer.write_handle
    wrote ({"address": [host, port], "authkey": hex, "volume_root": folder}); what
    `coral dashboard --modal-double` and `coral run --modal-double` use instead of Modal."""
    from coral.errors import CoralError

    try:
        handle = json.loads(Path(path).read_text())
        address = (str(handle["address"][0]), int(handle["address"][1]))
        authkey, volume_root = bytes.fromhex(handle["authkey"]), handle["volume_root"]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise CoralError(f"--modal-double {path}: not a Modal double handle ({exc})") from None
    try:
        return connect_double(address, authkey, volume_root)
    except OSError as exc:
        raise CoralError(f"--modal-double {path}: no Modal double server at "
                         f"{address[0]}:{address[1]} ({exc})") from None


def connect_double(address: tuple[str, int], authkey: bytes,
                   volume_root: Path | str | None = None) -> ModalDouble:
    """A ModalDouble whose queues and dicts live in the double's server at `address`
    (coral/testing/modal_double.py: DoubleServer) and whose deployed functions run there.
    `volume_root` is the folder of the Volumes, shared with the server by the filesystem."""
    manager = _DoubleClientManager(address=(str(address[0]), int(address[1])), authkey=authkey)
    manager.connect()
    store = manager.store()  # type: ignore[attr-defined]  # registered above
    cloud = manager.cloud()  # type: ignore[attr-defined]
    return ModalDouble(store=store, volume_root=volume_root, cloud=cloud)
