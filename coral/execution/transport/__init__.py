"""Queues and dicts behind one protocol: `local` (embedded SQLite) and `modal`.

`open_transport(kind)` is the one place that turns a backend name into a Transport; executors,
workers and the CLI never construct a backend class themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coral.errors import ConfigError
from coral.execution.transport.base import Dict, ItemTooLarge, Queue, Transport, TransportError
from coral.execution.transport.local import LocalTransport
from coral.home import Home

if TYPE_CHECKING:
    from coral.config import Config

TRANSPORT_KINDS = ("local", "modal")

__all__ = [
    "TRANSPORT_KINDS", "Dict", "ItemTooLarge", "Queue", "Transport", "TransportError",
    "open_transport",
]


def open_transport(kind: str, home: Home | None = None, config: Config | None = None) -> Transport:
    """The transport for backend `kind`.

    local: CORAL_HOME/queue.sqlite (`home`, default Home()). `serial` runs jobs in-process but
    still needs a dict for adapter claims and a queue for events, so it uses the local one.
    `config` carries backend-specific settings (the modal section) for remote backends.
    """
    if kind in ("local", "serial"):
        return LocalTransport((home or Home()).queue_db)
    if kind == "modal":
        # Credentials are checked before any call: a missing token is one line naming
        # `modal setup`, not a minute of retries.
        from coral.execution.transport.modal_backend import (  # heavy (modal): only on the Modal backend
            ModalTransport,  # heavy (modal): imported only on the Modal backend
        )

        return ModalTransport(config.modal.app_name if config is not None else "coral")
    raise ConfigError(f"unknown transport backend {kind!r} (known: {', '.join(TRANSPORT_KINDS)})")
