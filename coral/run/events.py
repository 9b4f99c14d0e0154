"""The run's event log: append-only JSONL segments under runs/RUN_ID/events/, the source of truth.

Each event is written (and fsync'd) to the log first, then published on the run's events
partition without blocking; a full or unreachable partition is skipped, because the ingestor
catches up from the log by sequence number. Event ids are `run_id:seq` and the engine emits
them in a canonical order, so a resumed run re-emits exactly the ids (and content) that the
interrupted one would have: `coral resume` cuts the log back to its last checkpoint first.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from coral.errors import CoralError, MessageError
from coral.execution.jobs import EVENTS_QUEUE
from coral.execution.messages import Event, EventType, decode, encode, event_id
from coral.execution.transport.base import Transport

log = logging.getLogger("coral.run.events")

SEGMENT_BYTES = 4 * 1024 * 1024  # a new segment starts past this size: files stay readable
SEGMENT_SUFFIX = ".jsonl"
# Data keys whose content depends on the machine or on timing: recorded, never compared.
# "meter" (which counter measured a test's runtime objective) decides instead whether that
# objective is compared at all (coral.run.registry.runtime_comparison).
RUNTIME_KEYS = ("timings", "runtime", "meter")


def segment_name(first_seq: int) -> str:
    return f"{first_seq:08d}{SEGMENT_SUFFIX}"


def segments(events_dir: Path) -> list[Path]:
    """Segment files in sequence order (names are zero-padded first sequence numbers)."""
    if not events_dir.is_dir():
        return []
    return sorted(p for p in events_dir.iterdir() if p.suffix == SEGMENT_SUFFIX and p.stem.isdigit())


def read_events(events_dir: Path, after: int = -1, run_id: str | None = None) -> Iterator[Event]:
    """Events with seq > `after`, in order. A torn last line (a crash mid-write) is skipped.

    The log is checked as it is read, each problem one CoralError naming the file and line: a
    line that is not an event, a seq that does not follow the one before (the first is the
    first segment's name: an event lost, repeated or out of place) and, when `run_id` is given,
    an event of another run."""
    expected: int | None = None
    for path in segments(events_dir):
        with open(path, "rb") as handle:  # bytes: a line that is not UTF-8 is named, not a traceback
            for number, raw in enumerate(handle, 1):
                if not raw.endswith(b"\n"):
                    return  # torn tail: the writer was killed mid-line
                event = _decode_line(raw, path, number)
                expected = _check_order(event, path, number, expected, run_id)
                if event.seq > after:
                    yield event


def _check_order(event: Event, path: Path, number: int, expected: int | None, run_id: str | None) -> int:
    """The seq the line after `event` must have; a CoralError when `event` is out of place."""
    if expected is None:  # the log's first event: the first segment is named by its seq
        expected = int(path.stem)
    if event.seq != expected:
        what = "an event is missing" if event.seq > expected else "an event is repeated or out of order"
        raise CoralError(f"{path}:{number}: event seq {event.seq} where {expected} was expected "
                         f"({what}: the log is damaged)")
    if run_id is not None and (event.run_id != run_id or event.event_id != event_id(run_id, event.seq)):
        raise CoralError(f"{path}:{number}: event {event.event_id!r} of run {event.run_id!r} in the log "
                         f"of run {run_id!r}")
    return expected + 1


def _decode_line(raw: bytes, path: Path, number: int) -> Event:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CoralError(f"{path}:{number}: corrupt event (not UTF-8 text)") from None
    try:
        return decode(Event, line)
    except MessageError as exc:
        raise CoralError(f"{path}:{number}: corrupt event ({exc})") from None


def truncate(events_dir: Path, start_seq: int, run_id: str | None = None) -> int:
    """Drop events with seq >= start_seq (and a torn last line); return how many were dropped.

    Only `coral resume` needs this: events past the last checkpoint belong to a generation
    that is about to be redone, and are re-emitted with the same ids and content. The whole
    log is checked first (`read_events`' checks), and so is that it holds every event before
    `start_seq`: resuming a log that lost some would leave a hole in it for good. Nothing is
    changed when a check fails.

    The log is cut with ftruncate(2) at the first dropped line, never rewritten: the checks
    above put a segment's events in seq order, so what is kept is a prefix of it. A resume
    killed (or out of disk) while cutting leaves each segment either as it was or cut, never
    emptied; rewriting a segment in place (truncate to 0, then write back what is kept) lost
    every event of it when the process died between the two.
    """
    plan: list[tuple[Path, list[bytes], int]] = []  # (segment, lines kept: a prefix, lines dropped)
    expected: int | None = None
    last = -1
    for path in segments(events_dir):
        lines = path.read_bytes().split(b"\n")
        complete, torn = lines[:-1], lines[-1]
        keep = []
        for number, line in enumerate(complete, 1):
            event = _decode_line(line, path, number)
            expected = _check_order(event, path, number, expected, run_id)
            if event.seq < start_seq:
                keep.append(line)
                last = event.seq
        plan.append((path, keep, len(complete) - len(keep) + (1 if torn else 0)))
    if last != start_seq - 1:
        ends = "holds no event" if last < 0 else f"ends at event {last}"
        raise CoralError(f"{events_dir}: the log {ends} but its run's checkpoint goes on "
                         f"from event {start_seq}: events {last + 1}..{start_seq - 1} are lost, so the "
                         "run cannot be resumed from this log")
    dropped = 0
    for path, keep, gone in plan:
        dropped += gone
        if not gone:
            continue
        if not keep:
            path.unlink()
            continue
        with open(path, "r+b") as handle:
            handle.truncate(sum(len(line) + 1 for line in keep))
            handle.flush()
            os.fsync(handle.fileno())
    return dropped


def science(event: Event) -> dict[str, Any]:
    """What must be identical between two runs of one config: no run id, no timings."""
    data = {k: v for k, v in event.data.items() if k not in RUNTIME_KEYS}
    if isinstance(data.get("cases"), list):  # a case's cost is measured work (docs/sandbox.md)
        data["cases"] = [{k: v for k, v in c.items() if k != "cost"} if isinstance(c, dict) else c
                         for c in data["cases"]]
    return {"seq": event.seq, "type": event.type, "generation": event.generation, "data": data}


# Events per queue put, and bytes: a generation's ~2,600 events are a dozen round trips to
# Modal, not 2,600, and no request nears Modal's size limits.
PUBLISH_CHUNK = 256
EMIT_SLICE = 4096  # events appended (and fsync'd) at a time by emit_many
PUBLISH_BYTES = 1024 * 1024


def _chunks(items: list[tuple[Event, str]]) -> Iterator[list[tuple[Event, str]]]:
    chunk: list[tuple[Event, str]] = []
    size = 0
    for item in items:
        n = len(item[1].encode("utf-8"))
        if chunk and (len(chunk) >= PUBLISH_CHUNK or size + n > PUBLISH_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += n
    if chunk:
        yield chunk


class EventLog:
    """Appends events with gap-free sequence numbers; `next_seq` restores a resumed run."""

    def __init__(self, run_id: str, events_dir: Path, transport: Transport | None = None,
                 events_queue: str = EVENTS_QUEUE, start_seq: int = 0) -> None:
        self.run_id = run_id
        self.dir = events_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self._publish_queue = transport.queue(events_queue) if transport is not None else None
        truncate(self.dir, start_seq, run_id)
        self.seq = start_seq
        self.published = 0
        self.skipped_publish = 0
        # The generation during which the partition was found full (-1: before any): nothing
        # more is sent until an event of a later generation, so when no one drains the
        # partition a generation costs one failed call, not one per event.
        self._full_in: int | None = None

    def emit(self, type_: EventType, data: dict[str, Any] | None = None,
             generation: int | None = None) -> Event:
        return self.emit_many([(type_, data or {}, generation)])[0]

    def emit_many(self, items: list[tuple[EventType, dict[str, Any], int | None]]) -> list[Event]:
        """Log a batch (one fsync per EMIT_SLICE events), then publish it without blocking, in
        chunks (_chunks). Slices keep a generation of 75,000 events from holding all their
        encoded text at once; each event is encoded once, for the log and the queue."""
        events: list[Event] = []
        full = False
        for start in range(0, len(items), EMIT_SLICE):
            part = []
            for type_, data, generation in items[start:start + EMIT_SLICE]:
                part.append(Event(event_id=event_id(self.run_id, self.seq), run_id=self.run_id,
                                  seq=self.seq, type=type_, generation=generation, data=data,
                                  wall_time=time.time()))
                self.seq += 1
            texts = [encode(e) for e in part]
            try:
                self._append(part, texts)
            except BaseException:
                self.seq = part[0].seq  # not in the log: the next event takes these numbers
                raise
            events.extend(part)
            if self._publish_queue is None:
                continue
            if full:  # the partition was full a moment ago: the log has these
                self.skipped_publish += len(part)
                continue
            chunks = list(_chunks(list(zip(part, texts, strict=True))))
            for i, chunk in enumerate(chunks):
                if not self._publish(chunk):
                    # The partition is full (no ingestor drains it): the rest would be refused
                    # too, item by item, each a write to the queue. The log has them all.
                    self.skipped_publish += sum(len(c) for c in chunks[i + 1:])
                    full = True
                    break
        return events

    def _append(self, events: list[Event], texts: list[str]) -> None:
        files = segments(self.dir)
        path = files[-1] if files else self.dir / segment_name(events[0].seq)
        if path.exists() and path.stat().st_size >= SEGMENT_BYTES:
            path = self.dir / segment_name(events[0].seq)
        lines = "".join(text + "\n" for text in texts).encode("utf-8")
        with open(path, "ab") as handle:
            size = handle.tell()
            try:
                handle.write(lines)
                handle.flush()
                os.fsync(handle.fileno())
            except BaseException:
                # A full disk (or a size limit) took part of the batch: cut it off again, so the
                # log never holds a torn line that a later append would bury mid-file (a
                # corrupt line no resume could read past). Shrinking needs no space.
                try:
                    handle.truncate(size)
                except OSError:
                    pass
                raise

    def _publish(self, chunk: list[tuple[Event, str]]) -> bool:
        """Publish a chunk; False when the partition is full (the chunk is skipped)."""
        if self._publish_queue is None:
            return True
        latest = max(-1 if e.generation is None else e.generation for e, _ in chunk)
        if self._full_in is not None and latest <= self._full_in:
            self.skipped_publish += len(chunk)
            return False
        try:
            self._publish_queue.put_many([text for _, text in chunk], block=False,
                                         partition=self.run_id)
            self.published += len(chunk)
            self._full_in = None
            return True
        except queue.Full as exc:  # no one drains it: the log has the events
            self._full_in = latest
            self.skipped_publish += len(chunk)
            log.debug("events partition of run %s full; not published before generation %d: %s",
                      self.run_id, latest + 1, exc)
            return False
        except Exception as exc:  # too large, or the service: the log has the events
            if len(chunk) == 1:
                self.skipped_publish += 1
                log.debug("event %s not published: %s", chunk[0][0].event_id, exc)
                return True
        for i, item in enumerate(chunk):  # one bad item (too large) must not cost its neighbours
            if not self._publish([item]):
                self.skipped_publish += len(chunk) - i - 1
                return False
        return True


def summary(events_dir: Path, run_id: str | None = None) -> dict[str, Any]:
    """Last event, counts per type and the highest generation seen: what `coral status` shows."""
    counts: dict[str, int] = {}
    last: Event | None = None
    generation = None
    for event in read_events(events_dir, run_id=run_id):
        counts[event.type] = counts.get(event.type, 0) + 1
        last = event
        if event.type == "generation_finished":
            generation = event.generation
    return {"events": sum(counts.values()), "counts": counts,
            "last": json.loads(encode(last)) if last else None,
            "generations_finished": generation}
