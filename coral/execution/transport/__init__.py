"""Queues and dicts behind one protocol: `local` (embedded SQLite) and `modal`.

Which transport a run uses is its backend's choice (`Backend.open_transport`, coral/run/backend.py);
the backend registry (coral/services/backends.py) is the one place that maps `backend.kind` to it.
"""

from __future__ import annotations

from coral.execution.transport.base import Dict, ItemTooLarge, Queue, Transport, TransportError, TransportWriteFailed
from coral.execution.transport.local import LocalTransport

__all__ = ["Dict", "ItemTooLarge", "LocalTransport", "Queue", "Transport", "TransportError", "TransportWriteFailed"]
