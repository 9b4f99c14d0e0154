"""The Modal double for tests: `ModalDouble` (coral/modal/double.py, in the product because
`coral validate` runs on it), and its cross-process server, which only tests use: one
DoubleStore in a `multiprocessing.managers` server on 127.0.0.1 with an authkey, so that worker
processes a test kills with SIGKILL share Modal's queues and dicts as containers do. The server
is also the double's cloud: an app deployed on it runs its functions (orchestrator, workers) in
the server's process, and clients in other processes spawn and await them through the Modal API.

    with DoubleServer() as server:
        server.deploy(CONFIG, overrides, volume_root, handlers)  # the app, in the server
        api = server.client(volume_root)               # this process
        connect(server.address, server.authkey)        # any other process
        server.write_handle(path, volume_root)         # for `coral ... --modal-double path`
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import subprocess
import sys
import threading
from multiprocessing.managers import BaseManager
from pathlib import Path
from typing import IO, cast

from coral.config import load_config
from coral.execution.jobs import JobBodies
from coral.modal.double import (
    DICT_IDLE_TTL,
    MAX_ITEM_BYTES,
    MAX_PARTITION_BYTES,
    MAX_PARTITION_ITEMS,
    DoubleCloud,
    DoubleStore,
    ModalDouble,
    connect_double,
)
from coral.modal.offline import deploy

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


class _Cloud(DoubleCloud):
    """The server's cloud: apps deployed here run their functions in this process."""

    def deploy(self, config_path: str, overrides: list[str], volume_root: str,
               handlers: str | None = None, scaledown_window: float = 2.0,
               launcher_interval: float = 2.0) -> None:
        """`coral modal deploy` for the double: the app of `config_path` (with `overrides`),
        its Volumes under `volume_root`, job bodies `handlers` ("module:attr")."""
        config = load_config(Path(config_path), overrides)
        deploy(self.api(config.modal.app_name, volume_root), config, bodies=JobBodies(handlers),
               preload=False, network_blocked=True, scaledown_window=scaledown_window,
               launcher_interval=launcher_interval)


_CLOUD: _Cloud | None = None


def _served_cloud() -> _Cloud:
    global _CLOUD
    if _CLOUD is None:
        _CLOUD = _Cloud(_served_store())
    return _CLOUD


class _StoreManager(BaseManager):
    pass


_StoreManager.register("store", callable=_served_store)
_StoreManager.register("cloud", callable=_served_cloud)


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

    def write_handle(self, path: Path | str, volume_root: Path | str) -> Path:
        """A handle file for `--modal-double` (coral.modal.double.connect_handle): the address,
        authkey and Volume folder another process connects with; readable by its owner only."""
        if self.address is None:
            raise RuntimeError("start the Modal double server first")
        path = Path(path)
        path.touch(mode=0o600)
        path.write_text(json.dumps({"address": list(self.address), "authkey": self.authkey.hex(),
                                    "volume_root": str(volume_root)}))
        return path

    def deploy(self, config_path: Path | str, overrides: list[str], volume_root: Path | str,
               handlers: str | None = None, **options: float) -> None:
        """Deploy the app of `config_path` in the server's process (the double's cloud):
        its orchestrator and workers run there, and clients reach them through the Modal API."""
        if self.address is None:
            raise RuntimeError("start the Modal double server first")
        manager = _StoreManager(address=self.address, authkey=self.authkey)
        manager.connect()
        cloud = manager.cloud()  # type: ignore[attr-defined]  # registered above
        cloud.deploy(str(config_path), list(overrides), str(volume_root), handlers, **options)

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
    """A ModalDouble whose queues, dicts and deployed functions live in the DoubleServer at
    `address`."""
    return connect_double(address, authkey, volume_root)


if __name__ == "__main__":
    _serve()
