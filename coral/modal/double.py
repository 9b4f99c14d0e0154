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
- Volumes: the committed state is a folder; each container mounts its own copy at start. Its
  writes reach the Volume only at `commit()`; others' commits appear only after `reload()`, which
  fails while the container holds a file of the view open or mapped. Where Modal is loose (it
  also commits in the background and at exit) the double is strict: code that passes here does
  not depend on timing there.

State lives in a `DoubleStore`. To share it across processes (workers that a test kills with
SIGKILL), `DoubleServer` hosts one store in a `multiprocessing.managers` server on 127.0.0.1
with an authkey, and `connect(address, authkey)` returns a ModalDouble in any process.
Values cross as JSON text: CORAL sends JSON only, and JSON never runs code when read.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import queue
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.managers import BaseManager
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any

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
        volumes: _VolumeFactory,
    ) -> None:
        self.name = name
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
                self._serve(container, item)
                with self.lock:
                    self.running -= 1
                    self._idle += 1
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

    def _serve(self, container: DoubleContainer, item: _Input) -> None:
        call = item.call
        if call.cancelled:
            call._finish(None, _modal_exception().InputCancellation("cancelled before start"))
            return
        _CURRENT.call_id = call.object_id
        container.inputs += 1
        try:
            call._finish(self._body(container.instance, *item.args, **item.kwargs), None)
        except BaseException as exc:  # delivered to .get(), as Modal does
            call._finish(None, exc)
        finally:
            _CURRENT.call_id = None


class DoubleFunction:
    """A deployed function (or a class method): `spawn` queues an input for its containers."""

    def __init__(self, name: str, pool: _Pool, deployed: _Deployed) -> None:
        self.name = name
        self.pool = pool
        self._deployed = deployed
        self.calls: list[DoubleFunctionCall] = []

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self.spawn(*args, **kwargs).get()

    def spawn(self, *args: Any, **kwargs: Any) -> DoubleFunctionCall:
        call = DoubleFunctionCall()
        self.calls.append(call)
        self._deployed.calls[call.object_id] = call
        self.pool.submit(_Input(call, args, kwargs))
        return call

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

    def spawn(self, *args: Any, **kwargs: Any) -> DoubleFunctionCall:
        return super().spawn(self._method, *args, **kwargs)


class _Deployed:
    """`api.Function` / `api.Cls` lookups, and what tests register as deployed."""

    def __init__(self, volumes: _VolumeFactory) -> None:
        self.volumes = volumes
        self.functions: dict[tuple[str, str], DoubleFunction] = {}
        self.classes: dict[tuple[str, str], DoubleCls] = {}
        self.calls: dict[str, DoubleFunctionCall] = {}

    def register(self, app_name: str, name: str, body: Callable[..., Any], *,
                 max_containers: int | None = None, scaledown_window: float = DEFAULT_SCALEDOWN,
                 volumes: tuple[str, ...] = ()) -> DoubleFunction:
        """Deploy `body` as function `name`; its containers mount `volumes` (Volume names)."""
        pool = _Pool(name, lambda _instance, *a, **k: body(*a, **k), enter=None,
                     max_containers=max_containers, scaledown_window=scaledown_window,
                     volume_names=tuple(volumes), volumes=self.volumes)
        fn = DoubleFunction(name, pool, self)
        self.functions[(app_name, name)] = fn
        return fn

    def register_cls(self, app_name: str, name: str, factory: Callable[..., Any], *,
                     max_containers: int | None = None,
                     scaledown_window: float = DEFAULT_SCALEDOWN,
                     volumes: tuple[str, ...] = ()) -> DoubleCls:
        cls = DoubleCls(name, factory, self, dict(
            max_containers=max_containers, scaledown_window=scaledown_window,
            volume_names=tuple(volumes)))
        self.classes[(app_name, name)] = cls
        return cls

    def function(self, app_name: str, name: str) -> DoubleFunction:
        try:
            return self.functions[(app_name, name)]
        except KeyError:
            raise _modal_exception().NotFoundError(
                f"Lookup failed for Function '{name}' from the '{app_name}' app"
            ) from None

    def cls(self, app_name: str, name: str) -> DoubleCls:
        try:
            return self.classes[(app_name, name)]
        except KeyError:
            raise _modal_exception().NotFoundError(
                f"Lookup failed for Cls '{name}' from the '{app_name}' app"
            ) from None


class _FunctionFactory:
    def __init__(self, deployed: _Deployed) -> None:
        self._deployed = deployed

    def from_name(self, app_name: str, name: str, *, environment_name: str | None = None,
                  **_: Any) -> DoubleFunction:
        return self._deployed.function(app_name, name)


class _ClsFactory:
    def __init__(self, deployed: _Deployed) -> None:
        self._deployed = deployed

    def from_name(self, app_name: str, name: str, *, environment_name: str | None = None,
                  **_: Any) -> DoubleCls:
        return self._deployed.cls(app_name, name)


class _FunctionCallFactory:
    def __init__(self, deployed: _Deployed) -> None:
        self._deployed = deployed

    def from_id(self, function_call_id: str, client: Any = None) -> DoubleFunctionCall:
        try:
            return self._deployed.calls[function_call_id]
        except KeyError:
            raise _modal_exception().NotFoundError(
                f"Function call {function_call_id!r} not found") from None


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
        self._push()
        with self.state.lock:
            self.state.commits += 1

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
        held = _open_paths_under(self.path)
        if held:
            rel = Path(held[0]).relative_to(self.path).as_posix()
            raise RuntimeError(
                f"there are open files preventing the operation: {rel} is open in this container")
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

    def __init__(self, state: _VolumeState) -> None:
        self._state = state
        self.name = state.name

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
        target = self._state.root / path.strip("/")
        if not target.is_file():
            raise _modal_exception().NotFoundError(f"No such file: {path}")
        return iter([target.read_bytes()])


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
        return DoubleVolume(self.state(name, create_if_missing))


# -------------------------------------------------------------------------------- the module


class ModalDouble:
    """Stands in for the `modal` module (pass it as `api=`)."""

    def __init__(
        self,
        store: DoubleStore | None = None,
        *,
        clock: Callable[[], float] | None = None,
        volume_root: Path | str | None = None,
    ) -> None:
        self.store = store if store is not None else DoubleStore(clock)
        self.Volume = _VolumeFactory(Path(volume_root) if volume_root is not None else None)
        self.deployed = _Deployed(self.Volume)
        self.Queue = _ObjectFactory(self.store, DoubleQueue, "Queue")
        self.Dict = _ObjectFactory(self.store, DoubleDict, "Dict")
        self.Function = _FunctionFactory(self.deployed)
        self.Cls = _ClsFactory(self.deployed)
        self.FunctionCall = _FunctionCallFactory(self.deployed)

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


# ---------------------------------------------------------------------- sharing across processes

_SERVED: DoubleStore | None = None


def _served_store() -> DoubleStore:
    global _SERVED
    if _SERVED is None:
        _SERVED = DoubleStore()
    return _SERVED


class _StoreManager(BaseManager):
    pass


_StoreManager.register("store", callable=_served_store)


class DoubleServer:
    """One DoubleStore in a server process on 127.0.0.1, reachable with an authkey.

    with DoubleServer() as server:
        api = server.client()                          # this process
        connect(server.address, server.authkey)        # any other process

    The server is `python -m coral.modal.double`; it exits when this object stops it
    or when the process that started it dies (its stdin closes).
    """

    def __init__(self) -> None:
        self.authkey = secrets.token_bytes(16)
        self.address: tuple[str, int] | None = None
        self._process: subprocess.Popen[str] | None = None
        self._stdin: IO[str] | None = None

    def start(self, timeout: float = 60.0) -> DoubleServer:
        process = self._process = subprocess.Popen(  # fixed argument list
            [sys.executable, "-m", "coral.modal.double"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        stdin, stdout = process.stdin, process.stdout
        if stdin is None or stdout is None:
            raise RuntimeError("the Modal double server has no pipes")
        self._stdin = stdin
        stdin.write(self.authkey.hex() + "\n")
        stdin.flush()
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not line or len(line[0].split()) != 2:
            self.stop()
            raise RuntimeError("the Modal double server did not start")
        host, port = line[0].split()
        self.address = (host, int(port))
        return self

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def client(self, volume_root: Path | str | None = None) -> ModalDouble:
        if self.address is None:
            raise RuntimeError("start the Modal double server first")
        return connect(self.address, self.authkey, volume_root=volume_root)

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        if self._stdin is not None:
            self._stdin.close()  # the server exits on EOF
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> DoubleServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve() -> None:
    """Server process main: authkey on stdin, 'host port' on stdout, exit on stdin EOF."""
    authkey = bytes.fromhex(sys.stdin.readline().strip())
    manager = _StoreManager(address=("127.0.0.1", 0), authkey=authkey)
    server = manager.get_server()
    assert isinstance(server.address, tuple)  # a TCP address, as asked for above
    host, port = server.address
    print(host, port, flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()  # returns at EOF: the parent stopped us or died
    os._exit(0)


_SHARED_SERVER: DoubleServer | None = None
_SHARED_LOCK = threading.Lock()


def shared_server() -> DoubleServer:
    """One DoubleServer per process, started on first use and stopped at exit (tests share it
    and keep apart by object names, instead of paying a server start each)."""
    global _SHARED_SERVER
    with _SHARED_LOCK:
        if _SHARED_SERVER is None:
            _SHARED_SERVER = DoubleServer().start()
            atexit.register(_SHARED_SERVER.stop)
        return _SHARED_SERVER


def connect(
    address: tuple[str, int], authkey: bytes, volume_root: Path | str | None = None
) -> ModalDouble:
    """A ModalDouble whose queues and dicts live in the DoubleServer at `address`."""
    host, port = address  # a list when it came through JSON
    manager = _StoreManager(address=(host, port), authkey=authkey)
    manager.connect()
    return ModalDouble(store=manager.store(), volume_root=volume_root)  # type: ignore[attr-defined]  # BaseManager.register adds it at run time


if __name__ == "__main__":
    _serve()
