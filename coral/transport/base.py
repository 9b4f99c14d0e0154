"""The transport protocol: named queues with partitions and a key-value dict.

Semantics follow modal.Queue / modal.Dict (DESIGN.md, "Modal facts"), so code written against
this protocol behaves the same on the local backend and on Modal:
- FIFO per partition; `get(block=True, timeout=t)` raises `queue.Empty` after t seconds;
  `get(block=False)` returns None when empty. `get` is an atomic pop with no acknowledgement.
- Items are JSON text (str), at most MAX_ITEM_BYTES each; at most MAX_PARTITION_ITEMS wait in
  one partition (`put` blocks up to `timeout`, then raises `queue.Full`).
- `Dict.put(key, value, skip_if_exists=True)` returns True only to the caller that created the
  key: the claim primitive. Values are JSON-compatible.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

MAX_ITEM_BYTES = 1024 * 1024
MAX_PARTITION_ITEMS = 5000
DEFAULT_PARTITION = ""


class ItemTooLarge(ValueError):
    """A queue item over MAX_ITEM_BYTES: send ids and paths, never weights."""


def check_item(item: str) -> str:
    if not isinstance(item, str):
        raise TypeError(f"queue items are JSON text (str), got {type(item).__name__}")
    size = len(item.encode("utf-8"))
    if size > MAX_ITEM_BYTES:
        raise ItemTooLarge(f"queue item is {size} bytes; the limit is {MAX_ITEM_BYTES}")
    return item


class Queue(ABC):
    @abstractmethod
    def put(self, item: str, *, partition: str | None = None, timeout: float | None = None) -> None:
        ...

    @abstractmethod
    def put_many(
        self, items: list[str], *, partition: str | None = None, timeout: float | None = None
    ) -> None:
        ...

    @abstractmethod
    def get(
        self, *, block: bool = True, timeout: float | None = None, partition: str | None = None
    ) -> str | None:
        ...

    @abstractmethod
    def get_many(
        self,
        n_values: int,
        *,
        block: bool = True,
        timeout: float | None = None,
        partition: str | None = None,
    ) -> list[str]:
        ...

    @abstractmethod
    def len(self, *, partition: str | None = None) -> int:
        ...

    @abstractmethod
    def clear(self, *, partition: str | None = None) -> None:
        ...


class Dict(ABC):
    @abstractmethod
    def get(self, key: str, default: Any = None) -> Any:
        ...

    @abstractmethod
    def put(self, key: str, value: Any, *, skip_if_exists: bool = False) -> bool:
        ...

    @abstractmethod
    def pop(self, key: str) -> Any:
        """Remove and return; KeyError when absent."""

    @abstractmethod
    def contains(self, key: str) -> bool:
        ...

    @abstractmethod
    def keys(self) -> list[str]:
        ...


class Transport(ABC):
    """A backend: hands out named queues and dicts."""

    name: str

    @abstractmethod
    def queue(self, name: str) -> Queue:
        ...

    @abstractmethod
    def dict(self, name: str) -> Dict:
        ...

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
