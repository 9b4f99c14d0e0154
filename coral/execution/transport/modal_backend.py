"""The Modal transport: the protocol of coral.execution.transport.base on modal.Queue and modal.Dict.

Each CORAL queue or dict is one named Modal object, `{app_name}-{name}`, created on first use
(`from_name(..., create_if_missing=True)`); partitions (one per run id) are Modal queue
partitions, and None is Modal's default partition. `api` is the `modal` module, or a stand-in
with the same surface (coral.testing.modal_double.ModalDouble) for offline tests.

What differs from the local backend (docs/modal.md): a partition is cleared 24 h after
its last put, and `get` is a pop with no acknowledgement (the executor's leases re-enqueue jobs
whose worker died). Dict values travel as JSON text, so both backends return the same types.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from coral.execution.transport.base import (
    Dict,
    Queue,
    Transport,
    TransportError,
    check_batch,
    check_key,
    check_name,
    check_partition,
    encode_value,
)

NO_CREDENTIALS = (
    "no Modal credentials: run `modal setup` (or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET)"
)


def modal_config_path() -> Path:
    """Where `modal setup` writes the token (MODAL_CONFIG_PATH overrides, as in modal.config)."""
    return Path(os.environ.get("MODAL_CONFIG_PATH") or Path.home() / ".modal.toml")


def has_credentials() -> bool:
    if os.environ.get("MODAL_IS_REMOTE") == "1":
        return True  # inside a Modal container, which authenticates itself
    if os.environ.get("MODAL_TOKEN_ID") and os.environ.get("MODAL_TOKEN_SECRET"):
        return True
    return modal_config_path().is_file()


def check_credentials() -> None:
    """Fail with one line before any call: without a token Modal fails late, or retries."""
    if not has_credentials():
        raise TransportError(NO_CREDENTIALS)


def modal_api(api: Any = None) -> Any:
    """The given stand-in, or the real `modal` module once credentials are known to exist."""
    if api is not None:
        return api
    check_credentials()
    import modal  # heavy (modal): only on the Modal backend

    return modal


def object_name(app_name: str, name: str) -> str:
    """The Modal object behind CORAL queue/dict `name` (Modal's name rule: 64 chars at most)."""
    check_name("queue or dict", name)
    full = f"{app_name}-{name}"
    try:
        return check_name("Modal object", full)
    except ValueError as exc:
        raise ValueError(f"{exc}; use a shorter modal.app_name") from None


def _partition(partition: str | None) -> str | None:
    key = check_partition(partition)  # same rule on both backends: 1..64 bytes, or None
    return None if partition is None else key


# Seconds to wait before each retry of a call that failed with a transient Modal error.
RETRY_DELAYS = (0.5, 1.0, 2.0)


def transient_errors(api: Any) -> tuple[type[BaseException], ...]:
    """Modal's errors that a retry may cure: the network, the service, its own timeouts."""
    exc = api.exception
    return (exc.ConnectionError, exc.InternalError, exc.ServiceError, exc.InternalFailure,
            exc.TimeoutError)


class _Retrying:
    """A Modal Queue or Dict handle whose calls are retried on transient errors (RETRY_DELAYS),
    then fail with one TransportError line: one dropped connection must not fail a run. A
    retried put may land twice; executors drop duplicate results and jobs by id."""

    def __init__(self, handle: Any, transient: tuple[type[BaseException], ...], what: str,
                 delays: tuple[float, ...] | None = None) -> None:
        self._handle, self._transient, self._what = handle, transient, what
        self._delays = RETRY_DELAYS if delays is None else delays

    def __getattr__(self, method: str) -> Any:
        target = getattr(self._handle, method)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            attempt = 0
            while True:
                try:
                    out = target(*args, **kwargs)
                    # Streams (Dict.keys/items) are read here, so their errors retry too.
                    return list(out) if isinstance(out, Iterator) else out
                except self._transient as exc:
                    if attempt == len(self._delays):
                        first = (str(exc).strip().splitlines() or [""])[0]
                        raise TransportError(f"Modal {self._what}.{method} failed {attempt + 1} "
                                             f"times: {type(exc).__name__}: {first}") from None
                    time.sleep(self._delays[attempt])
                    attempt += 1

        return call


class ModalQueue(Queue):
    def __init__(self, handle: Any, name: str) -> None:
        self._q = handle
        self.name = name

    def put_many(
        self, items: list[str], *, block: bool = True, timeout: float | None = None,
        partition: str | None = None,
    ) -> None:
        _, items = check_batch(items, partition)
        key = partition  # checked above; None is Modal's own default partition
        if not items:
            return
        if block:
            self._q.put_many(items, True, timeout, partition=key)
        else:  # Modal warns when a timeout comes with block=False
            self._q.put_many(items, False, partition=key)

    def get_many(
        self, n_values: int, *, block: bool = True, timeout: float | None = None,
        partition: str | None = None,
    ) -> list[str]:
        key = _partition(partition)
        if n_values < 1:
            raise ValueError(f"n_values must be at least 1, got {n_values}")
        if block:
            return list(self._q.get_many(n_values, True, timeout, partition=key))
        return list(self._q.get_many(n_values, False, partition=key))

    def len(self, *, partition: str | None = None, total: bool = False) -> int:
        if total:
            return int(self._q.len(total=True))
        return int(self._q.len(partition=_partition(partition)))

    def clear(self, *, partition: str | None = None, all: bool = False) -> None:
        if all:
            self._q.clear(all=True)
        else:
            self._q.clear(partition=_partition(partition))


class ModalDict(Dict):
    def __init__(self, handle: Any, name: str) -> None:
        self._d = handle
        self.name = name

    def get(self, key: str, default: Any = None) -> Any:
        text = self._d.get(check_key(key))
        return default if text is None else json.loads(text)

    def put(self, key: str, value: Any, *, skip_if_exists: bool = False) -> bool:
        text = encode_value(value)
        return bool(self._d.put(check_key(key), text, skip_if_exists=skip_if_exists))

    def pop(self, key: str) -> Any:
        return json.loads(self._d.pop(check_key(key)))  # Modal raises KeyError when absent

    def contains(self, key: str) -> bool:
        return bool(self._d.contains(check_key(key)))

    def keys(self) -> list[str]:
        return sorted(self._d.keys())  # Modal's order is unspecified; the local backend sorts

    def items(self) -> list[tuple[str, Any]]:
        # Modal's items() streams; keys+get would race with writers and cost one call per key.
        return sorted((k, json.loads(v)) for k, v in self._d.items())

    def len(self) -> int:
        return int(self._d.len())


class ModalTransport(Transport):
    """Queues and dicts on Modal, named `{app_name}-{name}`.

    `client` (a modal.Client) is passed to every lookup when given, e.g. one built with
    `modal.Client.from_credentials`; by default Modal uses the profile's token.
    """

    name = "modal"

    def __init__(
        self, app_name: str = "coral", *, api: Any = None, environment_name: str | None = None,
        client: Any = None,
    ) -> None:
        self.app_name = app_name
        object_name(app_name, "q")  # a bad app name fails here, before any network call
        self.api = modal_api(api)
        self._transient = transient_errors(self.api)
        self.environment_name = environment_name
        self._lookup: dict[str, Any] = {"environment_name": environment_name,
                                        "create_if_missing": True}
        if client is not None:
            self._lookup["client"] = client

    def queue(self, name: str) -> ModalQueue:
        handle = self.api.Queue.from_name(object_name(self.app_name, name), **self._lookup)
        return ModalQueue(_Retrying(handle, self._transient, f"queue {name}"), name)

    def dict(self, name: str) -> ModalDict:
        handle = self.api.Dict.from_name(object_name(self.app_name, name), **self._lookup)
        return ModalDict(_Retrying(handle, self._transient, f"dict {name}"), name)
