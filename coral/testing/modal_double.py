"""The Modal double for tests: `ModalDouble` (coral/modal/double.py, in the product because
`coral validate` runs on it), and its cross-process server, which only tests use: one
DoubleStore in a `multiprocessing.managers` server on 127.0.0.1 with an authkey, so that worker
processes a test kills with SIGKILL share Modal's queues and dicts as containers do.

    with DoubleServer() as server:
        api = server.client()                          # this process
        connect(server.address, server.authkey)        # any other process
"""

from __future__ import annotations

import atexit
import os
import secrets
import subprocess
import sys
import threading
from multiprocessing.managers import BaseManager
from pathlib import Path
from typing import IO, cast

from coral.modal.double import (
    DICT_IDLE_TTL,
    MAX_ITEM_BYTES,
    MAX_PARTITION_BYTES,
    MAX_PARTITION_ITEMS,
    DoubleStore,
    ModalDouble,
)

__all__ = [
    "DICT_IDLE_TTL", "MAX_ITEM_BYTES", "MAX_PARTITION_BYTES", "MAX_PARTITION_ITEMS",
    "DoubleServer", "DoubleStore", "ModalDouble", "connect", "shared_server",
]

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

    The server is `python -m coral.testing.modal_double`; it exits when this object stops it
    or when the process that started it dies (its stdin closes).
    """

    def __init__(self) -> None:
        self.authkey = secrets.token_bytes(16)
        self.address: tuple[str, int] | None = None
        self._process: subprocess.Popen[str] | None = None
        self._stdin: IO[str] | None = None

    def start(self, timeout: float = 60.0) -> DoubleServer:
        process = self._process = subprocess.Popen(  # fixed argument list
            [sys.executable, "-m", "coral.testing.modal_double"],
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
    host, port = cast(tuple[str, int], server.address)  # a TCP address: (host, port)
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
    manager = _StoreManager(address=(str(address[0]), int(address[1])), authkey=authkey)
    manager.connect()
    store = cast(DoubleStore, manager.store())  # type: ignore[attr-defined]  # registered above
    return ModalDouble(store=store, volume_root=volume_root)


if __name__ == "__main__":
    _serve()
