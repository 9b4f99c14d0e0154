"""Pause, continue and stop: requests a run's engine reads between jobs.

A request is one entry in the transport's control dict, keyed by run id; the engine polls it
(coral/run/engine.py) and clears a stale one when a run starts (coral/run/lifecycle.py).
"""

from __future__ import annotations

import time

from coral.config import Config
from coral.errors import CoralError
from coral.execution.transport import open_transport
from coral.home import Home
from coral.run.registry import ACTIVE

CONTROL_DICT = "control"
CONTROL_REQUESTS = ("pause", "continue", "stop")


def control_key(run_id: str) -> str:
    return f"control:{run_id}"


def send_request(home: Home, run_id: str, config: Config, state: str, request: str) -> str:
    """Put `request` for an active run; returns the line to show. `state` is the run's state now."""
    if request not in CONTROL_REQUESTS:
        raise CoralError(f"unknown run control {request!r} (known: {', '.join(CONTROL_REQUESTS)})")
    if state not in ACTIVE:
        raise CoralError(f"run {run_id} is {state}; only a running or paused run takes {request}")
    kind = "local" if config.backend.kind == "serial" else config.backend.kind
    with open_transport(kind, home=home, config=config) as transport:
        transport.dict(CONTROL_DICT).put(control_key(run_id), {"request": request, "at": time.time()})
    return f"{request} requested for run {run_id} (honoured between jobs)"
