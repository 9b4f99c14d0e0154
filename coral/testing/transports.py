"""The backends the transport contract tests (and the worker fault tests) run against.

Each entry makes a fresh transport in an empty folder. Flags say what a backend offers beyond the
protocol, so a test that needs it is skipped elsewhere:
- persistent: calling `make` again with the same folder sees the same data;
- multiprocess: separate processes calling `make(folder)` share data (tests with real processes).
Append entries for other backends (the in-memory Modal double; live Modal with credentials).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coral.errors import CoralError
from coral.execution.transport.base import Transport
from coral.execution.transport.local import LocalTransport


@dataclass(frozen=True)
class TransportFactory:
    name: str
    make: Callable[[Path], Transport]
    persistent: bool = False
    multiprocess: bool = False


def make_local(folder: Path) -> Transport:
    return LocalTransport(folder / "queue.sqlite")


FACTORIES: list[TransportFactory] = [
    TransportFactory("local", make_local, persistent=True, multiprocess=True),
]


def by_name(name: str) -> TransportFactory:
    return next(f for f in FACTORIES if f.name == name)


# ------------------------------------------------------------------ Modal (double and live)
# Imports stay inside the functions: child processes of the local tests import this file too,
# and should not pay for importing modal.

_DOUBLES: dict[Path, Any] = {}


def make_modal_double(folder: Path) -> Transport:
    """The in-memory Modal double, one fake workspace per folder (this process only)."""
    from coral.execution.transport.modal_backend import ModalTransport
    from coral.testing.modal_double import ModalDouble

    return ModalTransport(api=_DOUBLES.setdefault(folder.resolve(), ModalDouble()))


def _app_for(folder: Path) -> str:
    # One double server serves every test: object names keep each test's folder apart.
    return "t" + hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]


def make_modal_double_server(folder: Path) -> Transport:
    """The double hosted in a server process; processes that pass the same folder share it."""
    from coral.execution.transport.modal_backend import ModalTransport
    from coral.testing.modal_double import connect, shared_server

    where = folder / "modal-double.json"
    if where.exists():  # a child process: join the server the parent wrote down
        info = json.loads(where.read_text())
        api = connect((info["host"], info["port"]), bytes.fromhex(info["authkey"]))
    else:
        server = shared_server()
        assert server.address is not None
        folder.mkdir(parents=True, exist_ok=True)
        where.write_text(json.dumps({"host": server.address[0], "port": server.address[1],
                                     "authkey": server.authkey.hex()}))
        api = server.client()
    return ModalTransport(_app_for(folder), api=api)


# Read at import: conftest unsets MODAL_* in every test, so a live run keeps them from here.
_LIVE_TOKEN = (os.environ.get("MODAL_TOKEN_ID"), os.environ.get("MODAL_TOKEN_SECRET"))


def make_modal_live(folder: Path) -> Transport:
    """Real Modal with explicit credentials; the transport deletes its objects when closed."""
    import modal

    from coral.execution.transport.modal_backend import ModalTransport, object_name

    class LiveTestTransport(ModalTransport):
        def __init__(self, app_name: str) -> None:
            token_id, token_secret = _LIVE_TOKEN
            if token_id is None or token_secret is None:
                raise CoralError("live Modal transport needs MODAL_TOKEN_ID and MODAL_TOKEN_SECRET")
            client = modal.Client.from_credentials(token_id, token_secret)
            super().__init__(app_name, api=modal, client=client)
            self._client = client
            self._made: set[tuple[str, str]] = set()  # (kind, name)

        def queue(self, name: str) -> Any:
            self._made.add(("Queue", name))
            return super().queue(name)

        def dict(self, name: str) -> Any:
            self._made.add(("Dict", name))
            return super().dict(name)

        def close(self) -> None:
            for kind, name in sorted(self._made):
                getattr(modal, kind).objects.delete(
                    object_name(self.app_name, name), allow_missing=True, client=self._client
                )
            self._made.clear()

    return LiveTestTransport("live" + _app_for(folder))


FACTORIES += [
    TransportFactory("modal-double", make_modal_double),
    TransportFactory("modal-double-server", make_modal_double_server, multiprocess=True),
]
if all(_LIVE_TOKEN):
    FACTORIES.append(TransportFactory("modal-live", make_modal_live))
