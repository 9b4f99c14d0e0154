"""The ingestor: the one writer of store.duckdb (docs/architecture.md, "Contracts").

Each cycle, per run: drain the run's events partition (live, best effort), read whatever the
run's event log holds past the last read position (catch-up: after a restart, or where a publish
was skipped), apply the contiguous events past the run's high-water mark (the ready events of
several runs share one transaction), read new checkpoints for genome details, and now and then
replace the read snapshot. Sealed log segments are parsed whole by DuckDB's NDJSON reader.

Idempotent: an event with seq <= the mark is already stored. If it is stored with another type,
the log was rewritten there (a stopped run resumed from its checkpoint) and the run is rewound.

Events travel as frames (coral.store.store.FRAME_SCHEMA, one Arrow row per event): DuckDB parses a
log chunk's lines in one query, and ordering, de-duplication and the contiguity check are numpy
operations on the seq column, so a catch-up of a million events does no Python work per event.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coral.errors import CoralError
from coral.execution.jobs import EVENTS_QUEUE
from coral.execution.transport.base import Queue, Transport
from coral.home import Home
from coral.run.backend import Backend, LocalBackend
from coral.run.checkpoints import PREFIX as CHECKPOINT_PREFIX
from coral.run.checkpoints import load as load_checkpoint
from coral.run.events import segments
from coral.run.reevaluation import Reevaluation, read_reevaluation, reevaluation_files
from coral.run.registry import read_json_yaml, run_folders
from coral.store.mirror import RemoteFollower
from coral.store.store import Store, StoreWriteError, check_event, empty_frame, genome_row, snapshot_path

log = logging.getLogger("coral.store.ingest")

DRAIN_BATCH = 1000
LOCAL_RUNS = LocalBackend(pool=True)  # the default: runs of this home, local transport
APPLY_BATCH = 200_000  # events per transaction (several runs'): > a row group, bounds memory
_SEQ = re.compile(rb'"seq":(\d+)')
SEALED_BATCH = 32  # sealed segments per DuckDB read (x 4 MiB): parallel across files, bounded memory


def _stamp(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1)


class LogTail:
    """Reads one run's event log incrementally: (segment, byte offset) of the next unread line.

    Complete lines go to DuckDB in one batch per read (`Store.parse_lines`); the offset moves
    only past lines that parsed, so a corrupt line is named again on every read until fixed.
    """

    def __init__(self, events_dir: Path, store: Store) -> None:
        self.dir = events_dir
        self.store = store
        self.segment: Path | None = None
        self.offset = 0
        self.line = 1  # number of the line at `offset` in its segment (for error messages)
        self.next_seq: int | None = None  # seq of the line at `offset`, when known
        self.rewritten = False  # set when the log shrank or changed under us (a resume)
        # A corrupt line met after some good ones: those are returned, this is raised next time.
        self.failure: CoralError | None = None

    def _seek(self, files: list[Path], after: int) -> None:
        """Start at the last segment that can hold seq after + 1 (names are first seqs)."""
        start = files[0]
        for path in files:
            if int(path.stem) <= after + 1:
                start = path
        self.segment, self.offset, self.line, self.next_seq = start, 0, 1, None

    def read(self, after: int) -> pa.Table:
        """A frame of the complete events with seq > after, in order; a torn last line waits."""
        files = segments(self.dir)
        if not files:
            return empty_frame()
        if self.segment not in files or self.segment is None:
            if self.segment is not None:
                self.rewritten = True
            self._seek(files, after)
        assert self.segment is not None
        out: list[pa.Table] = []
        resets, batch = 0, SEALED_BATCH
        while True:
            index = files.index(self.segment)
            sealed = files[index:-1][:batch] if self.offset == 0 else []
            whole = self._read_sealed(sealed, files[index + len(sealed)]) if sealed else None
            if whole is None and len(sealed) > 1:
                batch = 1  # one file of these is not clean: go file by file to find it
                continue
            if whole is not None:
                out.append(whole.filter(pc.greater(whole.column("seq"), after)) if after >= 0 else whole)
                chunk: bytes | None = b""
            else:
                chunk = self._chunk()
            if chunk is None:  # the file changed below our offset: start over from the mark
                resets += 1
                if resets > 2:
                    raise CoralError(f"{self.dir}: the event log keeps changing under the reader")
                self.rewritten = True
                files = segments(self.dir)
                if not files:
                    return empty_frame()
                self._seek(files, after)
                out.clear()
                continue
            if chunk:
                try:
                    out.append(self._parse(chunk, after))
                except CoralError as exc:
                    if not out:
                        raise
                    self.failure = exc  # apply what came before the bad line; it waits at it
                    return pa.concat_tables(out)
                if self.failure is not None:  # the chunk's lines before a line out of order
                    return pa.concat_tables(out)
            index = files.index(self.segment)
            if index + 1 >= len(files):
                return pa.concat_tables(out) if out else empty_frame()
            self.segment, self.offset, self.line = files[index + 1], 0, 1
            self.next_seq = int(files[index + 1].stem)

    def _read_sealed(self, paths: list[Path], following: Path) -> pa.Table | None:
        """Sealed segments (a later one exists, so nothing is appended to them) read whole by
        DuckDB's NDJSON reader in one call. None sends the caller to the line path, which waits
        for a torn line, names a corrupt one and notices a rewrite: whenever a file does not end
        with a newline or changed while it was read, or the events are not exactly the seqs
        from the first file's name (the expected next seq) up to the following file's name."""
        try:
            before = [_stamp(p) for p in paths]
            frame = self.store.parse_files(paths)
            after = [_stamp(p) for p in paths]
            ends = [_last_byte(p) for p in paths]
        except FileNotFoundError:
            return None
        first, stop = int(paths[0].stem), int(following.stem)
        if (frame is None or before != after or any(end != b"\n" for end in ends)
                or (self.next_seq is not None and first != self.next_seq)
                or not np.array_equal(frame.column("seq").to_numpy(), np.arange(first, stop))):
            return None
        self.segment, self.offset = paths[-1], before[-1][1]
        self.line, self.next_seq = 1, stop  # the loop moves on to `following` next
        return frame

    def _chunk(self) -> bytes | None:
        assert self.segment is not None
        try:
            with open(self.segment, "rb") as handle:
                handle.seek(0, 2)
                size = handle.tell()
                if size < self.offset:
                    return None
                if size == self.offset:
                    return b""
                handle.seek(max(0, self.offset - 1))
                data = handle.read()
        except FileNotFoundError:
            return None
        if self.offset > 0:
            if data[:1] != b"\n":  # our offset is no longer a line start: the file was rewritten
                return None
            data = data[1:]
        end = data.rfind(b"\n") + 1
        complete = data[:end]
        if complete and self.next_seq is not None:
            first = _SEQ.search(complete[:200])
            if first is None or int(first.group(1)) != self.next_seq:
                return None
        return complete

    def _parse(self, chunk: bytes, after: int) -> pa.Table:
        assert self.segment is not None
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            number = self.line + chunk.count(b"\n", 0, exc.start)
            raise CoralError(f"{self.segment}: corrupt event line {number} (not UTF-8)") from None
        frame = self.store.parse_lines(text, str(self.segment), self.line)
        # The log is written in seq order without a gap: a line out of that order (an event
        # lost, repeated, or pasted in) is damage that no later read repairs. The lines before
        # it are taken; the tail then waits at it and names it, as at a corrupt line.
        seqs = frame.column("seq").to_numpy()
        first = self.next_seq if self.next_seq is not None else int(self.segment.stem) if self.offset == 0 \
            else int(seqs[0])
        wrong = np.flatnonzero(seqs != first + np.arange(len(seqs)))
        good = int(wrong[0]) if len(wrong) else frame.num_rows
        if good < frame.num_rows:
            expected = first + good
            failure = CoralError(f"{self.segment}: line {self.line + good}: event seq {int(seqs[good])} where "
                                 f"{expected} was expected (an event is missing, repeated or out of order: "
                                 "the log is damaged)")
            if good == 0:
                raise failure
            self.failure = failure
            chunk = chunk[:_nth_line_end(chunk, good)]
            frame = frame.slice(0, good)
        self.offset += len(chunk)
        self.line += frame.num_rows
        self.next_seq = int(frame.column("seq")[-1].as_py()) + 1
        return frame.filter(pc.greater(frame.column("seq"), after)) if after >= 0 else frame


def _nth_line_end(chunk: bytes, n: int) -> int:
    """The byte offset just past the n-th newline of `chunk` (n >= 1)."""
    end = -1
    for _ in range(n):
        end = chunk.index(b"\n", end + 1)
    return end + 1


def _past(frame: pa.Table, last: int) -> pa.Table:
    return frame.filter(pc.greater(frame.column("seq"), last)) if frame.num_rows else frame


def _contiguous(frame: pa.Table, last: int) -> tuple[pa.Table, pa.Table]:
    """(events last+1, last+2, ... without a gap; the rest, which waits), one row per seq:
    of rows sharing a seq the later one wins."""
    if not frame.num_rows:
        return frame, frame
    seqs = frame.column("seq").to_numpy()
    order = np.argsort(seqs, kind="stable")
    ordered = seqs[order]
    keep = np.append(ordered[1:] != ordered[:-1], True)  # the last of each run of equal seqs
    order, ordered = order[keep], ordered[keep]
    breaks = np.flatnonzero(ordered != last + 1 + np.arange(len(ordered)))
    cut = int(breaks[0]) if len(breaks) else len(ordered)
    if cut == len(seqs) and np.array_equal(order, np.arange(len(seqs))):
        return frame, frame.slice(0, 0)  # the common case: already in order, nothing waits
    return frame.take(order[:cut]), frame.take(order[cut:])


@dataclass
class IngestStatus:
    running: bool = False
    cycles: int = 0
    events: int = 0  # applied since start
    live: int = 0  # of which arrived through the events partition
    rewinds: int = 0
    last_cycle: float | None = None
    last_snapshot: float | None = None
    last_error: str | None = None
    waiting: dict[str, int] = field(default_factory=dict)  # run -> events held back by a gap
    unreadable: dict[str, str] = field(default_factory=dict)  # run -> why it cannot be ingested


class Ingestor:
    """The store's single writer, for `coral ingest` and for the dashboard's one thread.

    `backend` is where live events arrive (its transport's events partitions, one per run);
    None reads logs only (what coral.analysis does when no snapshot exists);
    `remote`: backends whose runs' folders live elsewhere (Modal's Volume): each run they follow
    (`Backend.followed_runs`) is copied into `home` (coral/store/mirror.py, every `mirror_every`
    seconds while it runs) and its live events drained from its own transport, so it is ingested
    as a local run is;
    `db_path` ":memory:" keeps the store in memory and never snapshots.
    """

    def __init__(self, home: Home | None = None, backend: Backend | None = LOCAL_RUNS, *,
                 remote: Sequence[Backend] = (), db_path: Path | str | None = None,
                 snapshot_every: float = 2.0, interval: float = 0.5, mirror_every: float = 2.0) -> None:
        self.home = home or Home()
        self.backend = backend
        self.db_path = db_path if db_path is not None else self.home.store_db
        self.snapshot_target = snapshot_path(self.home)
        self.snapshot_every = snapshot_every
        self.interval = interval
        self.status = IngestStatus()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tails: dict[str, LogTail] = {}
        self._pending: dict[str, pa.Table] = {}  # live events past a gap (frames)
        self._records: dict[str, dict[str, Any]] = {}
        self._dirty = False
        self._write_failed = False
        if str(self.db_path) != ":memory:":
            self.home.root.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.db_path)
        # Readers' snapshot lacks the new columns or tables: write a new one at the first chance.
        self._dirty = self.store.columns_added > 0 or self.store.migrated > 0
        self.status.unreadable = self.store.unreadable()
        self._transport: Transport | None = None
        self._queue: Queue | None = None
        if backend is not None:
            self._transport = backend.open_transport(self.home)
            self._queue = self._transport.queue(EVENTS_QUEUE)
        self.remote = (RemoteFollower(self.home, list(remote), every=mirror_every, interval=interval)
                       if remote else None)
        self._followed: dict[str, Backend] = {}  # remote runs of this cycle, with their backend

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Ingestor:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self
            self._stop.clear()
            if self.remote is not None:
                self.remote.start()
            self._thread = threading.Thread(target=self._loop, name="coral-ingest", daemon=True)
            self.status.running = True
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
                self.status.last_error = None
            except Exception as exc:  # keep ingesting the other runs; the error is shown
                self.status.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                log.warning("ingest cycle failed: %s", self.status.last_error)
            self._stop.wait(self.interval)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread, write a last snapshot, close the store and the transport."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.remote is not None:
            self.remote.stop()
        self.status.running = False
        with self._lock:
            try:
                if self._dirty and not self._write_failed and str(self.db_path) != ":memory:":
                    self.snapshot()
            except CoralError as exc:  # the store failed already: that error is the one to show
                log.warning("no last snapshot: %s", exc)
            finally:
                self.store.close()
                if self._transport is not None:
                    self._transport.close()

    close = stop

    def __enter__(self) -> Ingestor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def last_snapshot_time(self) -> float | None:
        return self.status.last_snapshot

    # ------------------------------------------------------------------ one cycle

    def run_ids(self, marks: dict[str, int] | None = None) -> list[str]:
        """Runs in the store and run folders; a folder whose name is not a run id is skipped."""
        known = set(self.store.last_seqs() if marks is None else marks)
        known.update(run_folders(self.home))
        known.update(self._followed)
        return sorted(known)

    def run_once(self, snapshot: bool | None = None) -> int:
        """One pass over every run; returns how many events were applied.

        `snapshot` True forces one, False skips it, None writes one when due and changed.
        """
        try:
            return self._run_once(snapshot)
        except StoreWriteError:
            self._write_failed = True  # DuckDB refuses further writes: no last snapshot on stop
            raise

    def _run_once(self, snapshot: bool | None) -> int:
        with self._lock:
            self._forget_deleted()
            applied = 0
            batch: list[tuple[str, pa.Table, dict[str, Any]]] = []
            # Read once per cycle, not per run: each query costs a few ms (more when the GIL is
            # contended), and a home holds many finished runs. Only this thread writes them.
            marks = self.store.last_seqs()
            checkpoints = self.store.checkpoint_generations()
            reevaluated = self.store.reevaluation_stamps()
            problems: dict[str, str] = {}  # run -> why it could not be read this cycle
            if self.remote is not None:
                if not self.remote.threaded:
                    self.remote.cycle()  # run_once without start(): the remote look happens here
                self._followed = self.remote.followed()
                problems.update(self.remote.errors())
            try:
                for run_id in self.run_ids(marks):
                    # One run's files cannot stop the others: its error is recorded, not raised.
                    try:
                        ready = self._ingest_run(run_id, marks.get(run_id, -1))
                        for start in range(0, ready.num_rows, APPLY_BATCH):
                            batch.append((run_id, ready.slice(start, APPLY_BATCH), self._record(run_id)))
                            if sum(b[1].num_rows for b in batch) >= APPLY_BATCH:
                                applied += self._apply(batch, problems)
                        self._ingest_checkpoints(run_id, checkpoints.get(run_id, -1))
                        self._ingest_reevaluations(run_id, reevaluated.get(run_id, {}))
                    except StoreWriteError:
                        raise  # the store file, not this run
                    except Exception as exc:
                        problems.setdefault(run_id, self._unreadable_reason(run_id, exc))
                    tail = self._tails.get(run_id)
                    if tail is not None and tail.failure is not None:
                        problems.setdefault(run_id, str(tail.failure))
                        tail.failure = None
            finally:
                applied += self._apply(batch, problems)
            self._record_unreadable(problems)
            self.status.cycles += 1
            self.status.last_cycle = time.time()
            self.status.events += applied
            due = self.status.last_snapshot is None or (
                time.time() - self.status.last_snapshot >= self.snapshot_every)
            if str(self.db_path) != ":memory:" and (snapshot or (snapshot is None and self._dirty and due)):
                self.snapshot()
            return applied

    def _forget_deleted(self) -> None:
        """A run whose folder is gone was deleted (the Runs page, or by hand): its rows go too.
        Only runs whose config.yaml was read count, so a run seen live before its folder exists stays."""
        for run_id in sorted(self.store.registered_runs()):
            if not self.home.run_dir(run_id).exists():
                log.info("run %s: folder deleted; removing it from the store", run_id)
                self.store.forget(run_id)
                for state in (self._tails, self._pending, self._records):
                    state.pop(run_id, None)
                self.status.waiting.pop(run_id, None)
                self._dirty = True

    def snapshot(self) -> Path:
        with self._lock:
            path = self.store.snapshot(self.snapshot_target)
            self.status.last_snapshot = time.time()
            self._dirty = False
            return path

    def _record(self, run_id: str) -> dict[str, Any]:
        if run_id not in self._records:
            record = read_json_yaml(self.home.run_config(run_id))
            if not record:
                return {}  # not written yet (or a run seen only live): read again next time
            self._records[run_id] = record
        return self._records[run_id]

    def _live_items(self, run_id: str) -> list[Any]:
        """The next live items of a run: a remote run's from what its follower drained (one
        take), any other's from the home's events partition."""
        if self.remote is not None and run_id in self._followed:
            return self.remote.take(run_id)
        if self._queue is None:
            return []
        return self._queue.get_many(DRAIN_BATCH, block=False, partition=run_id)

    def _drain(self, run_id: str) -> pa.Table:
        """Live events of a run's partition as a frame; bad items are dropped (the log has them)."""
        good: list[str] = []
        for _ in range(50):  # bounded, so one busy run cannot starve the others
            items = self._live_items(run_id)
            for item in items:
                try:
                    event = check_event(json.loads(item), f"events partition {run_id}")
                except (CoralError, json.JSONDecodeError) as exc:
                    # The log holds every event; a bad live item costs nothing but latency.
                    log.warning("dropped a live event for %s: %s", run_id, exc)
                    continue
                if event["run_id"] == run_id:
                    good.append(item if isinstance(item, str) else json.dumps(event))
            if len(items) < DRAIN_BATCH or run_id in self._followed:
                break
        try:
            return self.store.parse_lines(good, f"events partition {run_id}")
        except CoralError as exc:
            log.warning("dropped live events for %s: %s", run_id, exc)
            return empty_frame()

    def _ingest_run(self, run_id: str, last: int) -> pa.Table:
        """The run's events ready to apply (contiguous past its mark); later ones wait in _pending."""
        live = self._drain(run_id)
        tail = self._tails.get(run_id)
        if tail is None:
            tail = self._tails[run_id] = LogTail(self.home.events_dir(run_id), self.store)
        logged = tail.read(after=last)
        if tail.rewritten:  # re-read it all, so what changed at or below the mark is seen
            tail.rewritten = False
            tail.segment = None
            logged = tail.read(after=-1)
        last = self._rewind_if_rewritten(run_id, pa.concat_tables([live, logged]), last)
        live = _past(live, last)
        self.status.live += live.num_rows
        # Later sources win a seq held twice: pending (older live items) < live < the log.
        pending = self._pending.get(run_id, empty_frame())
        ready, rest = _contiguous(pa.concat_tables([_past(pending, last), live, _past(logged, last)]), last)
        self._pending[run_id] = rest
        if rest.num_rows:
            self.status.waiting[run_id] = rest.num_rows
        else:
            self.status.waiting.pop(run_id, None)
        return ready

    def _apply(self, batch: list[tuple[str, pa.Table, dict[str, Any]]], problems: dict[str, str]) -> int:
        """Apply and empty `batch`: several runs' events in one transaction (Store.apply_frames).
        If that fails, each run is applied on its own, so one bad run holds back only itself: its
        error goes to `problems`, and it is read again from its mark next cycle."""
        if not batch:
            return 0
        items = batch[:]
        batch.clear()
        try:
            applied = self.store.apply_frames(items)
        except StoreWriteError:
            raise
        except CoralError:
            applied = 0
            for run_id in dict.fromkeys(r for r, _, _ in items):
                try:
                    applied += self.store.apply_frames([b for b in items if b[0] == run_id])
                except StoreWriteError:
                    raise
                except CoralError as exc:
                    problems.setdefault(run_id, str(exc))
                    self._tails.pop(run_id, None)  # what was read but not stored is read again
                    self._pending.pop(run_id, None)
        self._dirty = self._dirty or applied > 0
        return applied

    def _unreadable_reason(self, run_id: str, exc: Exception) -> str:
        if isinstance(exc, CoralError):
            return str(exc)
        # Not a known kind of bad input: worth a traceback in the log, and one line in the store.
        log.exception("run %s: cannot be ingested", run_id)
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__

    def _record_unreadable(self, problems: dict[str, str]) -> None:
        """Store what changed: newly unreadable runs (and new reasons), and runs readable again."""
        known = self.status.unreadable
        for run_id, reason in sorted(problems.items()):
            if known.get(run_id) != reason:
                log.info("run %s cannot be ingested: %s", run_id, reason)  # callers show it
                self.store.set_unreadable(run_id, reason)
                self._dirty = True
        for run_id in sorted(set(known) - set(problems)):
            self.store.set_unreadable(run_id, None)
            self._dirty = True
        self.status.unreadable = dict(problems)

    def _rewind_if_rewritten(self, run_id: str, seen: pa.Table, last: int) -> int:
        """Events at or below the mark must match what is stored; the first that does not
        marks where the log was rewritten: forget from there and take the new events."""
        old = seen.filter(pc.less_equal(seen.column("seq"), last))
        seq = self.store.first_mismatch(run_id, old)
        if seq is None:
            return last
        log.info("run %s: log rewritten at seq %d; rewinding the store", run_id, seq)
        self.store.rewind(run_id, seq)
        self.status.rewinds += 1
        self._dirty = True
        return seq - 1

    def _ingest_checkpoints(self, run_id: str, done: int) -> None:
        """Genome details (CA seed, genes, knobs, lineage) come from the run's checkpoints."""
        folder = self.home.checkpoints_dir(run_id)
        if not folder.is_dir():
            return
        for path in sorted(folder.glob(f"{CHECKPOINT_PREFIX}*.json")):
            stem = path.stem[len(CHECKPOINT_PREFIX):]
            if not stem.isdigit() or int(stem) <= done:
                continue
            point = load_checkpoint(path)  # its genomes are validated there, naming the field
            generation = point.generation
            rows = [genome_row(run_id, generation, g) for g in point.population]
            rows += [genome_row(run_id, generation + 1, g) for g in point.next_population]
            self.store.add_genomes(run_id, rows, generation, self._record(run_id))
            self._dirty = True

    def _ingest_reevaluations(self, run_id: str, stored: dict[str, str]) -> None:
        """The run's re-evaluation files (`coral evaluate`) that are new or changed since stored, and
        the rows of files removed. A file that cannot be read is named (the run's unreadable
        reason) after the readable ones are stored."""
        rows, failure = [], None
        present: set[str] = set()
        for path in reevaluation_files(self.home, run_id):
            present.add(path.name)
            stamp = ":".join(map(str, _stamp(path)))
            if stored.get(path.name) == stamp:
                continue
            try:
                rows.append(reevaluation_row(run_id, path, stamp, read_reevaluation(path)))
            except CoralError as exc:
                failure = failure or exc
        gone = sorted(set(stored) - present)
        if rows or gone:
            self.store.put_reevaluations(run_id, rows, gone)
            self._dirty = True
        if failure is not None:
            raise failure


def reevaluation_row(run_id: str, path: Path, stamp: str, record: Reevaluation) -> dict[str, Any]:
    """The store's row for one re-evaluation file of `run_id`'s folder (coral.store.schema,
    migration 6); a file of another run (copied in by hand) is refused, naming both."""
    if record.run_id != run_id:
        raise CoralError(f"{path}: a re-evaluation of run {record.run_id!r}, not of {run_id!r} whose folder holds it")
    name = path.name
    index = [record.instances.index(n) for n in record.withheld if n in record.instances]

    def withheld(solved: list[float]) -> float | None:
        return sum(solved[i] for i in index) / len(index) if index else None

    row: dict[str, Any] = {
        "run_id": record.run_id, "file": name, "stamp": stamp, "genome_id": record.genome_id,
        "evaluated_on": record.on, "run_seed": record.run_seed, "instances": len(record.instances),
        "withheld": len(index), "samples": record.samples, "fresh": len(record.seeds),
        "seeds": json.dumps(record.seeds), "pick_fitness": record.pick_fitness,
        "pick_evaluations": record.pick_evaluations, "adapter": record.adapter,
        "per_seed": json.dumps(record.model.per_seed_fixed_at_k),
        "baseline_per_seed": json.dumps(record.baseline.per_seed_fixed_at_k),
        "solved": json.dumps(record.model.solved), "baseline_solved": json.dumps(record.baseline.solved),
        "instance_names": json.dumps(record.instances), "withheld_names": json.dumps(record.withheld),
        "knobs": json.dumps(record.knobs), "created": record.created, "wall_seconds": record.wall_seconds,
        "withheld_fixed_at_k": withheld(record.model.solved),
        "baseline_withheld_fixed_at_k": withheld(record.baseline.solved),
    }
    for measure in ("fixed_at_k", "bugfix", "syntax", "fix_chance"):
        row[measure] = getattr(record.model, measure)
        row[f"baseline_{measure}"] = getattr(record.baseline, measure)
    return row
