"""Pause, continue and stop: requests a run's engine reads between jobs.

A request is one entry in the transport's control dict, keyed by run id; the engine polls it
(coral/run/engine.py) and clears a stale one when a run starts (coral/run/lifecycle.py).
Pause and stop also hold the run's jobs at the workers (the holds dict, coral/execution/jobs.py):
from the moment of the request no job of the run starts, of any stage, including jobs already
queued; jobs already running finish. Continue lifts the hold. A run that ends stopped or failed
leaves a stop hold, so its leftover queued jobs are dropped, not run.
"""

from __future__ import annotations

import time

from coral.errors import CoralError
from coral.execution.jobs import HOLDS_DICT, hold_key
from coral.execution.transport.base import Transport
from coral.run.registry import ACTIVE

CONTROL_DICT = "control"
CONTROL_REQUESTS = ("pause", "continue", "stop")


def control_key(run_id: str) -> str:
    return f"control:{run_id}"


def send_request(transport: Transport, run_id: str, state: str, request: str) -> str:
    """Put `request` for an active run on its backend's transport (the run's control channel,
    `Backend.open_transport`); returns the line to show. `state` is the run's state now."""
    if request not in CONTROL_REQUESTS:
        raise CoralError(f"unknown run control {request!r} (known: {', '.join(CONTROL_REQUESTS)})")
    if state not in ACTIVE:
        raise CoralError(f"run {run_id} is {state}; only a running or paused run takes {request}")
    # The hold first: once the engine sees the request, no worker starts a job of the run.
    set_hold(transport, run_id, None if request == "continue" else request)
    transport.dict(CONTROL_DICT).put(control_key(run_id), {"request": request, "at": time.time()})
    if request == "continue":
        return f"continue requested for run {run_id}"
    return (f"{request} requested for run {run_id}: no new job starts; jobs already running "
            "finish first")


def set_hold(transport: Transport, run_id: str, request: str | None) -> None:
    """Hold the run's jobs at the workers ("pause": they wait; "stop": they are dropped), or
    lift the hold (None)."""
    holds = transport.dict(HOLDS_DICT)
    if request is None:
        try:
            holds.pop(hold_key(run_id))
        except KeyError:
            pass
    else:
        holds.put(hold_key(run_id), {"request": request, "at": time.time()})


def clear_requests(transport: Transport, run_id: str) -> None:
    """A run (re)starting: a stale request or hold from an earlier life must not apply."""
    try:
        transport.dict(CONTROL_DICT).pop(control_key(run_id))
    except KeyError:
        pass
    set_hold(transport, run_id, None)


def pending_request(transport: Transport, run_id: str) -> str | None:
    """The run's control request now ("pause", "continue", "stop"), None when there is none."""
    value = transport.dict(CONTROL_DICT).get(control_key(run_id))
    request = value.get("request") if isinstance(value, dict) else None
    return request if request in CONTROL_REQUESTS else None


def keep_requests(transport: Transport, run_id: str) -> str | None:
    """The same life of a run going on in a new process (a Modal restart of its preempted or
    crashed orchestrator call): the user's pending request still applies, and its hold is put
    back as the request says (the old process may have lifted it, or left a stop hold as it
    ended); returns the request."""
    request = pending_request(transport, run_id)
    set_hold(transport, run_id, request if request in ("pause", "stop") else None)
    return request
