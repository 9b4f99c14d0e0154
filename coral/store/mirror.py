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
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from coral.home import Home
from coral.run.backend import Backend, RunFile

# Top-level files of a run folder that the pages and the ingestor read.
TOP_FILES = ("config.yaml", "status.json", "progress.json")
FOLDERS = ("events", "checkpoints")
ENDED = ("finished", "stopped", "failed")
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
                if path.is_file() and path.stat().st_size == remote.size:
                    continue  # segments grow and checkpoints are written once: same size, same file
                data = backend.read_run_file(self.home, run_id, f"{sub}/{name}")
                if data is not None:
                    _write(path, data)
                    written += 1
            if sub == "events" and local.is_dir():
                for path in local.iterdir():  # a resume rewrote the log: segments past it are gone
                    if path.suffix == ".jsonl" and path.name not in listing:
                        path.unlink()
                        written += 1
        top = backend.list_run_files(self.home, run_id, "") or {}
        for name in TOP_FILES:
            stamp = top.get(name)
            if stamp is None or copy.stamps.get(name) == stamp and (folder / name).is_file():
                continue
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
