"""Local copies of runs whose folder lives on a remote backend (a Modal run's, on its Volume).

The ingestor reads runs from `CORAL_HOME/runs/RUN_ID/` (event log, checkpoints, config.yaml,
status.json, progress.json). For a run submitted to Modal that folder is on the Volume, so the
ingestor keeps a copy of it here, fetched through the Backend (`list_run_files`,
`read_run_file`): the copy is what every page, export and notebook reads, so a Modal run is a run
like any other once copied. What the run has committed to the Volume (after every generation and
at its end) is what can be copied; the live events partition covers the time in between.

Copies are whole-file and atomic (write aside, then `os.replace`): a reader sees the old file or
the new one. Event segments and checkpoints only grow or appear, so a file whose size matches is
not fetched again; a segment that shrank or vanished on the Volume means the log was rewritten (a
stopped run resumed from its checkpoint) and the copy follows; the ingestor then rewinds the store.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from coral.errors import CoralError
from coral.execution.jobs import EVENTS_QUEUE
from coral.execution.transport.base import Transport
from coral.home import Home
from coral.run.backend import LIVE_DICT, LIVE_FILES, Backend, RunFile, live_key
from coral.run.events import segments

log = logging.getLogger("coral.store.mirror")

# Top-level files of a run folder that the pages and the ingestor read.
TOP_FILES = LIVE_FILES
FOLDERS = ("events", "checkpoints")
ENDED = ("finished", "stopped", "failed")
TERMINAL = ("run_finished", "run_stopped", "run_failed")  # a run's last event
SETTLED_EVERY = 60.0  # seconds between looks at a run that ended and is copied whole


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.copy"  # dot name: no reader lists it (segments, checkpoints)
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass
class RunCopy:
    """What is known of one remote run's folder: the stamps of the top-level files last copied,
    when it was last looked at, and whether it has ended and is copied whole."""

    stamps: dict[str, RunFile] = field(default_factory=dict)
    live: dict[str, bytes] = field(default_factory=dict)  # the live files as last published
    looked: float = 0.0
    settled: bool = False


class Mirror:
    """Keeps `home`'s copy of each run that `backends` follow (`Backend.followed_runs`)."""

    def __init__(self, home: Home, backends: list[Backend], every: float = 2.0) -> None:
        self.home = home
        self.backends = backends
        self.every = every
        self.copies: dict[str, RunCopy] = {}

    def runs(self) -> dict[str, Backend]:
        """Followed runs by id, each with its backend."""
        return {run_id: backend for backend in self.backends for run_id in backend.followed_runs(self.home)}

    def sync_live(self, transport: Transport, run_id: str) -> int:
        """Copy the run's live files as it published them (LIVE_DICT, coral/run/backend.py): its
        state, stage counts and per-genome points as they happen, where the Volume has them once
        a generation. The number of files that changed."""
        copy = self.copies.setdefault(run_id, RunCopy())
        live = transport.dict(LIVE_DICT)
        written = 0
        for name in LIVE_FILES:
            text = live.get(live_key(run_id, name))
            if not isinstance(text, str):
                continue  # not published (yet, or any more): the Volume's copy stands
            data = text.encode("utf-8")
            if copy.live.get(name) == data:
                continue
            path = self.home.run_dir(run_id) / name
            if not (path.is_file() and path.read_bytes() == data):
                _write(path, data)
                written += 1
            copy.live[name] = data
        return written

    def whole(self, run_id: str) -> bool:
        """Whether the copy holds a run that ended, to its last event: its log's last line is the
        run's terminal event (run_finished, run_stopped or run_failed). Such a copy needs nothing
        more from the backend, so a failure to reach it (no token, offline) costs it nothing."""
        files = segments(self.home.events_dir(run_id))
        if not files:
            return False
        try:
            lines = files[-1].read_bytes().rstrip(b"\n").rsplit(b"\n", 1)
            return json.loads(lines[-1]).get("type") in TERMINAL
        except (OSError, ValueError, AttributeError):
            return False

    def due(self, run_id: str, now: float | None = None) -> bool:
        copy = self.copies.setdefault(run_id, RunCopy())
        wait = SETTLED_EVERY if copy.settled else self.every
        return (now if now is not None else time.monotonic()) - copy.looked >= wait

    def sync(self, backend: Backend, run_id: str) -> int:
        """Copy what changed on the backend since the last look; the number of files written.
        A run that has ended and whose copy is whole is settled: looked at once a minute only."""
        copy = self.copies.setdefault(run_id, RunCopy())
        copy.looked = time.monotonic()
        written = 0
        folder = self.home.run_dir(run_id)
        for sub in FOLDERS:
            listing = backend.list_run_files(self.home, run_id, sub)
            if listing is None:
                continue
            local = folder / sub
            for name, remote in sorted(listing.items()):
                if name.startswith("."):
                    continue  # a writer's temporary file
                path = local / name
                known = copy.stamps.get(f"{sub}/{name}")
                if path.is_file() and path.stat().st_size == remote.size and known in (None, remote):
                    # Segments grow and checkpoints are written once: same size, same file. A
                    # stamp seen before that changed at the same size is a rewrite (a resume).
                    continue
                data = backend.read_run_file(self.home, run_id, f"{sub}/{name}")
                if data is not None:
                    _write(path, data)
                    copy.stamps[f"{sub}/{name}"] = remote
                    written += 1
            if sub == "events" and local.is_dir():
                for path in local.iterdir():  # a resume rewrote the log: segments past it are gone
                    if path.suffix == ".jsonl" and path.name not in listing:
                        path.unlink()
                        written += 1
        top = backend.list_run_files(self.home, run_id, "") or {}
        for name in TOP_FILES:
            stamp = top.get(name)
            if stamp is None or name in copy.live or copy.stamps.get(name) == stamp and (folder / name).is_file():
                continue  # unchanged, or published live (never older than the Volume's commit)
            data = backend.read_run_file(self.home, run_id, name)
            if data is None:
                continue
            _write(folder / name, data)
            copy.stamps[name] = stamp
            written += 1
        try:
            ended = json.loads((folder / "status.json").read_bytes()).get("state") in ENDED
        except (OSError, ValueError, AttributeError):
            ended = False  # not copied yet, or not a status: look again
        copy.settled = ended and written == 0
        return written


RETRY_AFTER = 30.0  # seconds before a remote run whose backend failed is tried again
DRAIN_BATCH = 1000
DRAIN_ROUNDS = 50  # get_many calls per run and cycle: one busy run cannot starve the others


def _one_line(exc: Exception, backend: Backend) -> str:
    """A CoralError says it already (a Modal failure names what to run next); anything else from
    the backend's SDK is named by its type and first line."""
    if isinstance(exc, CoralError):
        return str(exc)
    text = str(exc).strip().splitlines()
    detail = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return f"following this {backend.kind} run failed ({detail}); tried again in {RETRY_AFTER:.0f} s"


class RemoteFollower:
    """Everything the ingestor needs from remote backends, kept off the store's writer: each
    followed run's copy (Mirror) and its live events, drained from its own transport into a buffer
    the ingestor takes from (`take`). A Modal call can take a minute to fail (the client retries),
    so `start` runs this in its own thread and the ingest of every other run never waits for it.
    A run whose backend failed is one line in `errors` and is tried again after RETRY_AFTER s."""

    def __init__(self, home: Home, backends: list[Backend], every: float = 2.0,
                 interval: float = 0.5) -> None:
        self.mirror = Mirror(home, backends, every=every)
        self.home, self.interval = home, interval
        self.runs: dict[str, Backend] = {}
        self._transports: dict[str, Transport] = {}
        self._live: dict[str, list[str]] = {}
        self._errors: dict[str, str] = {}
        self._failed_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def threaded(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> RemoteFollower:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="coral-remote-runs", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.cycle()
            except Exception:  # the listing of followed runs itself: logged, tried again
                log.exception("following remote runs failed")
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        for transport in self._transports.values():
            transport.close()
        self._transports.clear()

    def cycle(self) -> None:
        """One look at every followed run: its live files and events, and, when due, what it
        committed to its backend's storage."""
        runs = self.mirror.runs()
        with self._lock:
            self.runs = runs
        for run_id, backend in runs.items():
            if time.monotonic() - self._failed_at.get(run_id, -RETRY_AFTER) < RETRY_AFTER:
                continue
            try:
                copy = self.mirror.copies.get(run_id)
                if copy is None or not copy.settled:  # what it publishes as it runs
                    transport = self._transport(backend, run_id)
                    self.mirror.sync_live(transport, run_id)
                    self._drain(transport, run_id)
                if self.mirror.due(run_id):  # what it committed: now and then
                    self.mirror.sync(backend, run_id)
            except Exception as exc:  # the backend failed for this run: its one line, the others go on
                self._failed_at[run_id] = time.monotonic()
                if self.mirror.whole(run_id):  # nothing is missing: a copy of an ended run
                    log.info("run %s: copied whole; %s", run_id, _one_line(exc, backend))
                    self.mirror.copies.setdefault(run_id, RunCopy()).settled = True
                    continue
                with self._lock:
                    self._errors[run_id] = _one_line(exc, backend)
                continue
            self._failed_at.pop(run_id, None)
            with self._lock:
                self._errors.pop(run_id, None)

    def _transport(self, backend: Backend, run_id: str) -> Transport:
        if run_id not in self._transports:
            self._transports[run_id] = backend.run_transport(self.home, run_id)
        return self._transports[run_id]

    def _drain(self, transport: Transport, run_id: str) -> None:
        queue = transport.queue(EVENTS_QUEUE)
        for _ in range(DRAIN_ROUNDS):
            items = queue.get_many(DRAIN_BATCH, block=False, partition=run_id)
            with self._lock:
                self._live.setdefault(run_id, []).extend(
                    i if isinstance(i, str) else json.dumps(i) for i in items)
            if len(items) < DRAIN_BATCH:
                break

    def take(self, run_id: str) -> list[str]:
        """The live events drained for `run_id` since the last take (JSON text)."""
        with self._lock:
            return self._live.pop(run_id, [])

    def errors(self) -> dict[str, str]:
        with self._lock:
            return dict(self._errors)

    def followed(self) -> dict[str, Backend]:
        with self._lock:
            return dict(self.runs)
