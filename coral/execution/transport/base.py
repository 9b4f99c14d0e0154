"""The transport protocol: named queues with partitions and a key-value dict.

Semantics follow modal.Queue / modal.Dict (docs/modal.md), so code written against
this protocol behaves the same on the local backend and on Modal:
- FIFO per partition. `get(block=True, timeout=t)` raises `queue.Empty` after t seconds (None:
  wait forever); `get(block=False)` returns None when empty. `get_many(n)` returns 1..n items
  (blocking) or [] (non-blocking, empty). `get` is an atomic pop with no acknowledgement.
- Items are JSON text (str), at most MAX_ITEM_BYTES each. At most MAX_PARTITION_ITEMS wait in
  one partition: `put(block=True)` waits up to `timeout` for room, then raises `queue.Full`;
  `put(block=False)` raises `queue.Full` at once. `put_many` is all or nothing.
- Partition keys are 1..64 bytes; None is the queue's default partition.
- `Dict.put(key, value, skip_if_exists=True)` returns True only to the caller that created the
  key: the claim primitive. No compare-and-swap, no per-key expiry (store it in the value).
  Keys are str; values are JSON-compatible and come back as JSON would return them.
"""

from __future__ import annotations

import json
import queue
import re
from abc import ABC, abstractmethod
from typing import Any

from coral.errors import CoralError

MAX_ITEM_BYTES = 1024 * 1024
MAX_PARTITION_ITEMS = 5000
MAX_PARTITION_KEY_BYTES = 64
DEFAULT_PARTITION = ""  # how backends store the default (None) partition
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # Modal's object-name rule


class TransportError(CoralError):
    """The backend cannot be used (unreadable file, closed transport, missing credentials)."""


class TransportWriteFailed(TransportError):
    """A write the queue's storage refused (a full disk, an I/O error): nothing of it was stored,
    so a run stopped by it continues from its last checkpoint once that is fixed."""


class ItemTooLarge(ValueError):
    """A queue item or dict value over MAX_ITEM_BYTES: send ids and paths, never weights."""


def check_item(item: str) -> str:
    if not isinstance(item, str):
        raise TypeError(f"queue items are JSON text (str), got {type(item).__name__}")
    size = len(item.encode("utf-8"))
    if size > MAX_ITEM_BYTES:
        raise ItemTooLarge(f"queue item is {size} bytes; the limit is {MAX_ITEM_BYTES}")
    return item


def check_partition(partition: str | None) -> str:
    """None -> DEFAULT_PARTITION; a named partition must be 1..64 bytes (as on Modal)."""
    if partition is None:
        return DEFAULT_PARTITION
    if not isinstance(partition, str):
        raise TypeError(f"partition keys are str, got {type(partition).__name__}")
    size = len(partition.encode("utf-8"))
    if not 1 <= size <= MAX_PARTITION_KEY_BYTES:
        raise ValueError(
            f"partition key {partition!r} is {size} bytes; it must be 1..{MAX_PARTITION_KEY_BYTES}"
        )
    return partition


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(
            f"{kind} name {name!r}: use letters, digits, '.', '_' or '-' (at most 64 characters)"
        )
    return name


def check_key(key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"dict keys are str, got {type(key).__name__}")
    return key


def encode_value(value: Any) -> str:
    """Dict values travel as JSON: anything else is a TypeError, not a silent str()."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"dict values must be JSON-compatible: {exc}") from None
    size = len(text.encode("utf-8"))
    if size > MAX_ITEM_BYTES:
        raise ItemTooLarge(f"dict value is {size} bytes; the limit is {MAX_ITEM_BYTES}")
    return text


def check_batch(items: list[str], partition: str | None,
                cap: int = MAX_PARTITION_ITEMS) -> tuple[str, list[str]]:
    """The checks every backend makes before a put: partition key, item type and size, and a
    batch that could never fit a partition (fail now rather than wait out the timeout)."""
    part = check_partition(partition)
    items = [check_item(item) for item in items]
    if len(items) > cap:
        raise queue.Full(f"{len(items)} items exceed the partition cap {cap}")
    return part, items


class Queue(ABC):
    def put(
        self,
        item: str,
        *,
        block: bool = True,
        timeout: float | None = None,
        partition: str | None = None,
    ) -> None:
        self.put_many([item], block=block, timeout=timeout, partition=partition)

    @abstractmethod
    def put_many(
        self,
        items: list[str],
        *,
        block: bool = True,
        timeout: float | None = None,
        partition: str | None = None,
    ) -> None: ...

    def get(
        self, *, block: bool = True, timeout: float | None = None, partition: str | None = None
    ) -> str | None:
        """One item, or None (non-blocking, empty); a blocking get past `timeout` raises
        queue.Empty, as get_many does."""
        items = self.get_many(1, block=block, timeout=timeout, partition=partition)
        return items[0] if items else None

    @abstractmethod
    def get_many(
        self,
        n_values: int,
        *,
        block: bool = True,
        timeout: float | None = None,
        partition: str | None = None,
    ) -> list[str]: ...

    @abstractmethod
    def len(self, *, partition: str | None = None, total: bool = False) -> int:
        """Items waiting in one partition, or in all of them with total=True."""

    @abstractmethod
    def clear(self, *, partition: str | None = None, all: bool = False) -> None:
        """Drop one partition's items, or every partition's with all=True."""


class Dict(ABC):
    @abstractmethod
    def get(self, key: str, default: Any = None) -> Any: ...

    @abstractmethod
    def put(self, key: str, value: Any, *, skip_if_exists: bool = False) -> bool:
        """Store; with skip_if_exists, store only if absent. True when this call stored it."""

    @abstractmethod
    def pop(self, key: str) -> Any:
        """Remove and return; KeyError when absent."""

    @abstractmethod
    def contains(self, key: str) -> bool: ...

    @abstractmethod
    def keys(self) -> list[str]: ...

    @abstractmethod
    def items(self) -> list[tuple[str, Any]]: ...

    @abstractmethod
    def len(self) -> int: ...


class Transport(ABC):
    """A backend: hands out named queues and dicts (names follow NAME_PATTERN)."""

    name: str
    # Items one partition holds (Modal's cap); executors keep their window below it. Only the
    # local backend lets a test lower it, so the test can overflow it many times over quickly.
    partition_cap: int = MAX_PARTITION_ITEMS

    @abstractmethod
    def queue(self, name: str) -> Queue: ...

    @abstractmethod
    def dict(self, name: str) -> Dict: ...

    def close(self) -> None:  # noqa: B027 - an optional hook, empty by default
        pass

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
