"""One line, naming what to run next, for each Modal failure a user can meet.

The exception types are those modal 1.6.4 raises (modal/exception.py): AuthError for a token
Modal refuses, ConnectionError once its client gives up reaching Modal, NotFoundError for an
app, function, Volume or secret that does not exist (lookups are lazy: it comes at first use),
ResourceExhaustedError for quotas and rate limits. Without any token the transport has already
said so (`modal setup`) before any call.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterator
from contextlib import contextmanager

from coral.errors import CoralError


class ModalFailure(CoralError):
    """A Modal call failed in a way the user can act on; the message says how."""


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def explain(exc: BaseException, *, app: str, volume: str | None = None,
            doing: str = "talking to Modal") -> str | None:
    """The one line for `exc`, or None when it is not a Modal failure this module knows."""
    from modal import exception as modal_exception

    said = _first_line(exc)
    deploy = f"`coral modal deploy CONFIG` (CONFIG's modal.app_name is {app!r})"
    if isinstance(exc, modal_exception.AuthError):
        return (f"Modal refused the token while {doing} (expired or revoked?): {said}; run "
                "`modal setup` (or `modal token new`) and try again")
    if isinstance(exc, modal_exception.NotFoundError):
        if m := re.search(r"Lookup failed for (?:Function|Cls) '([^']+)' from the '([^']+)' app", said):
            return (f"Modal app {m.group(2)!r} has no {m.group(1)!r} while {doing}: it is not "
                    f"deployed, or deployed under another name; run {deploy}, or set "
                    "modal.app_name to the deployed app (`modal app list` shows them)")
        if re.search(r"secret", said, re.IGNORECASE):
            return (f"a Modal secret named in modal.secrets does not exist ({said}); create it "
                    "(`modal secret create NAME KEY=VALUE`) or remove it from modal.secrets, then "
                    f"run {deploy}")
        if re.search(r"volume", said, re.IGNORECASE) and volume:
            return (f"Modal Volume {volume!r} does not exist ({said}); run {deploy}, which "
                    "creates it, or set modal.volume to the Volume the app uses")
        return f"Modal could not find what CORAL asked for while {doing}: {said}; run {deploy}"
    if isinstance(exc, modal_exception.ResourceExhaustedError):
        return (f"Modal quota or rate limit reached while {doing}: {said}; wait and retry, or "
                "lower modal.max_containers / modal.max_containers_test (`modal app list` shows "
                "what else runs)")
    if isinstance(exc, (modal_exception.ConnectionError, builtins.ConnectionError)):
        return (f"Modal is unreachable while {doing}: {said}; check the network (and "
                "https://status.modal.com), then try again")
    if isinstance(exc, modal_exception.TimeoutError):
        return f"Modal did not answer in time while {doing}: {said}; try again"
    if isinstance(exc, modal_exception.Error):
        return f"Modal failed while {doing}: {type(exc).__name__}: {said}"
    return None


@contextmanager
def modal_failures(*, app: str, volume: str | None = None,
                   doing: str = "talking to Modal") -> Iterator[None]:
    """Turn a Modal failure inside the block into one ModalFailure line (see `explain`)."""
    try:
        yield
    except CoralError:
        raise
    except Exception as exc:
        line = explain(exc, app=app, volume=volume, doing=doing)
        if line is None:
            raise
        raise ModalFailure(line) from None
