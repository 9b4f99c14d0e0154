"""The run store: DuckDB tables derived from the runs' event logs (coral.store.schema).

Only the ingestor (coral.store.ingest) opens the store file read-write; everyone else reads a
snapshot that `Store.snapshot` replaces atomically (copy after CHECKPOINT, then os.replace), so
no reader ever needs DuckDB's write lock. The writer holds `store.duckdb.lock` (an flock, with its
PID inside) for its whole life, and the snapshot copy runs in a child process: a POSIX lock, which
DuckDB's is, belongs to the process and is dropped when the process closes *any* descriptor of the
file, so copying the file from the writer process ended DuckDB's lock at the first snapshot.
A batch of events becomes an Arrow table, inserted with one `INSERT ... SELECT` per table inside
the same transaction that checks and advances the run's high-water mark: a crash leaves either the
whole batch and its mark, or neither, and no event is stored twice (run_events and jobs have no
primary key: the mark is their guard).

Hot path: DuckDB parses the JSON lines itself (`Store.parse_lines` / `parse_files` -> a frame,
one Arrow row per event) and derives the jobs and run_events rows in SQL; a job is one row
(the evaluations and events views read it); only the few events per generation (run_started,
generation_finished, baseline_finished) are read in Python. Log lines and live items go through
the same parse, so stored JSON text is DuckDB's minified form either way.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess  # nosec B404 - cp with an argument list, never a shell
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coral.errors import CoralError
from coral.evolution.genome import Genome
from coral.execution.messages import SCHEMA_VERSION as MESSAGE_SCHEMA
from coral.home import Home
from coral.store.schema import (
    LIFECYCLE,
    METRICS,
    MIGRATIONS,
    OBJECTIVES,
    SCHEMA_VERSION,
    SEQ_TABLES,
    evaluations_view,
    objective_columns,
    usual_event_id,
)

SNAPSHOT_NAME = "store.snapshot.duckdb"
EVENT_TYPES = frozenset({*LIFECYCLE, "generation_started", "generation_finished",
                         "baseline_finished", "job_finished"})


class StoreError(CoralError):
    """The store file cannot be opened or holds something this CORAL cannot read."""


class StoreWriteError(StoreError):
    """A write to the store file itself failed (disk full, file size limit, I/O error): not the
    fault of any one run, so the ingestor stops rather than blaming a run."""


REBUILD_HINT = ("the store holds nothing the run logs do not: move it aside and `coral ingest` "
                "rebuilds it from the logs")


class WriterLock:
    """The one-writer lock of a store file: an flock on PATH.lock, held open for the writer's
    life, with the holder's PID written inside so a second writer can name it.

    flock, not fcntl/lockf: an flock belongs to the open file description, so closing some other
    descriptor of the file in this process does not release it.
    """

    def __init__(self, store_path: str) -> None:
        self.path = Path(f"{store_path}.lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a+", encoding="utf-8")  # held for the writer's life
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.seek(0)
            holder = self._handle.read().strip() or "unknown"
            self._handle.close()
            raise StoreError(f"the store {store_path} is in use by process {holder} (a `coral ingest` "
                             "or a dashboard): one writer at a time; stop that one, or read the "
                             "snapshot") from None
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(f"{os.getpid()}\n")
        self._handle.flush()

    def release(self) -> None:
        self._handle.close()


def snapshot_path(home: Home) -> Path:
    return home.root / SNAPSHOT_NAME


def _cp() -> str:
    path = shutil.which("cp")
    if path is None:
        raise StoreError("no `cp` on PATH: the store snapshot is copied with it")
    return path


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def check_event(obj: Any, where: str) -> dict[str, Any]:
    """The fields the store relies on, checked without pydantic: this is the hot path."""
    if not isinstance(obj, dict):
        raise CoralError(f"{where}: event is not a JSON object")
    try:
        run_id, seq, type_, data = obj["run_id"], obj["seq"], obj["type"], obj["data"]
    except KeyError as exc:
        raise CoralError(f"{where}: event lacks {exc.args[0]!r}") from None
    version = obj.get("schema_version", MESSAGE_SCHEMA)
    if type(version) is not int or version != MESSAGE_SCHEMA:
        raise CoralError(f"{where}: event has schema_version {version!r}; this CORAL reads {MESSAGE_SCHEMA}")
    if not isinstance(run_id, str) or not isinstance(seq, int) or seq < 0:
        raise CoralError(f"{where}: event has a bad run_id or seq")
    if type_ not in EVENT_TYPES or not isinstance(data, dict):
        raise CoralError(f"{where}: event {run_id}:{seq} has unknown type {type_!r} or no data")
    return obj


class _Rows:
    """Column lists per table, filled event by event, turned into Arrow tables at the end."""

    def __init__(self) -> None:
        self.cols: dict[str, dict[str, list[Any]]] = {}

    def add(self, table: str, row: dict[str, Any]) -> None:
        cols = self.cols.get(table)
        if cols is None:
            cols = self.cols[table] = {k: [] for k in row}
        for key, value in row.items():
            cols[key].append(value)

    def tables(self) -> Iterable[tuple[str, pa.Table]]:
        for name, cols in self.cols.items():
            yield name, pa.table(cols)


def _generation_rows(rows: _Rows, run_id: str, seq: int, generation: int, d: dict[str, Any]) -> None:
    best, mean = d.get("best", {}), d.get("mean", {})
    pheno, cache, gate = d.get("phenotype_diversity", {}), d.get("cache", {}), d.get("gate", {})
    row: dict[str, Any] = {"run_id": run_id, "generation": generation, "seq": seq}
    row.update({f"best_{m}": best.get(m) for m in METRICS})
    row.update({f"mean_{m}": mean.get(m) for m in METRICS})
    row.update({
        "genotype_diversity": d.get("genotype_diversity"), "phenotype_distinct": pheno.get("distinct"),
        "phenotype_share": pheno.get("share"), "cache_hits": cache.get("hits"),
        "cache_misses": cache.get("misses"), "cache_hit_rate": cache.get("hit_rate"),
        "gate_threshold": gate.get("gate_threshold"), "gated_out": gate.get("gated_out"),
        "pool": gate.get("pool"), "survivors": gate.get("survivors"),
        "wall_seconds": (d.get("timings") or {}).get("wall_seconds"),
    })
    rows.add("generations", row)
    survivors = set(d.get("survivors") or [])
    counts = d.get("evaluations") or {}
    for genome_id, metrics in sorted((d.get("genomes") or {}).items()):
        rows.add("scores", {"run_id": run_id, "generation": generation, "genome_id": genome_id,
                            "seq": seq, **{m: metrics.get(m) for m in METRICS},
                            "survived": genome_id in survivors,
                            "evaluations": counts.get(genome_id, 1)})


_JOB = {"genome": "VARCHAR", "problem": "VARCHAR", "sample": "INTEGER", "raw": "VARCHAR", "candidate": "VARCHAR",
        "cases": "JSON", "passed_all": "BOOLEAN", "timings": "JSON", "objectives": dict.fromkeys(OBJECTIVES, "DOUBLE")}
# One event per row: what `Store.parse_lines` returns and `Store.apply_frame` takes. `data` is
# the JSON text of every event but job_finished, whose fields are columns of their own instead
# (the hot path: one JSON parse per line, no re-serialisation).
FRAME_SCHEMA = pa.schema([
    ("seq", pa.int64()), ("event_id", pa.string()), ("run_id", pa.string()), ("type", pa.string()),
    ("generation", pa.int32()), ("wall_time", pa.float64()), ("data", pa.string()),
    ("genome", pa.string()), ("problem", pa.string()), ("sample", pa.int32()), ("raw", pa.string()),
    ("candidate", pa.string()), ("cases", pa.string()), ("passed_all", pa.bool_()), ("timings", pa.string()),
    *((o, pa.float64()) for o in OBJECTIVES)])
_HEADER = _dumps({"schema_version": "BIGINT", "seq": "BIGINT", "event_id": "VARCHAR", "run_id": "VARCHAR",
                  "type": "VARCHAR", "generation": "INTEGER", "wall_time": "DOUBLE", "data": _JOB})
_TYPES = ", ".join(f"'{t}'" for t in sorted(EVENT_TYPES))
# check_event's checks in SQL: `_bad` is NULL for a usable event. Only the few non-job events
# have their data extracted as text (CASE evaluates a branch only for the rows it selects).
# No ORDER BY: DuckDB keeps insertion order (preserve_insertion_order, on by default).
_PARSE_TEMPLATE = f"""
SELECT seq, event_id, run_id, type, generation, wall_time, data, d.genome, d.problem, d.sample, d.raw,
       d.candidate, d.cases::VARCHAR AS cases, d.passed_all, d.timings::VARCHAR AS timings,
       {", ".join(f"d.objectives.{o} AS {o}" for o in OBJECTIVES)},
  CASE WHEN NOT starts_with(ltrim(line), '{{') THEN 'event is not a JSON object'
       WHEN schema_version IS DISTINCT FROM {MESSAGE_SCHEMA} AND schema_version IS NOT NULL
        THEN 'event has schema_version ' || schema_version || '; this CORAL reads {MESSAGE_SCHEMA}'
       WHEN run_id IS NULL THEN 'event lacks ''run_id'''
       WHEN seq IS NULL OR seq < 0 THEN 'event lacks ''seq'' or has a bad one'
       WHEN type IS NULL OR type NOT IN ({_TYPES}) OR d IS NULL OR NOT starts_with(coalesce(data, '{{'), '{{')
         THEN 'event ' || run_id || ':' || seq || ' has unknown type '
              || coalesce('''' || type || '''', 'NULL') || ' or no data'
  END AS _bad
FROM ({{source}})"""
_PARSE_SQL = _PARSE_TEMPLATE.replace("{source}", f"""
  SELECT line, e.schema_version, e.seq, e.event_id, e.run_id, e.type, e.generation, e.wall_time, e.data AS d,
         CASE WHEN e.type <> 'job_finished' THEN json_extract(line, '$.data')::VARCHAR END AS data
  FROM (SELECT line, from_json(line, '{_HEADER}') AS e FROM _lines)""")


def _sql_type(spec: str | dict[str, Any]) -> str:
    if isinstance(spec, str):
        return spec
    return "STRUCT(" + ", ".join(f"{k} {_sql_type(v)}" for k, v in spec.items()) + ")"


# A whole sealed segment read by DuckDB's own NDJSON reader: no Python or Arrow work per line.
# `data` is read as JSON text once and its job fields extracted from it.
_FILE_COLUMNS = {**{k: v for k, v in json.loads(_HEADER).items() if k != "data"}, "data": "JSON"}
_FILE_SQL = _PARSE_TEMPLATE.replace("{source}", f"""
  SELECT '{{' AS line, schema_version, seq, event_id, run_id, type, generation, wall_time,
         from_json(data, '{_dumps(_JOB)}') AS d,
         CASE WHEN type <> 'job_finished' THEN data::VARCHAR END AS data
  FROM read_ndjson($path, columns = {{{", ".join(f"{k}: '{_sql_type(v)}'" for k, v in _FILE_COLUMNS.items())}}},
                   format = 'newline_delimited', ignore_errors = false)""")
# job_finished -> one jobs row (`d.get(...) or default`, as the Python path did it); the
# evaluations and events views read it (store_schema migration 3).
_JOBS_INSERT = f"""
INSERT INTO jobs BY NAME
SELECT run_id, seq, generation, genome AS genome_id, problem, sample, raw, candidate,
       coalesce(cases, '[]') AS cases, coalesce(passed_all, false) AS passed_all,
       coalesce(timings, '{{}}') AS timings, timings->>'worker' AS worker,
       {", ".join(f"coalesce({o}, 0.0) AS {o}" for o in OBJECTIVES)},
       coalesce(json_array_length(cases), 0) AS total,
       coalesce(len(list_filter(json_extract(cases, '$[*].passed'), lambda x: x::VARCHAR = 'true')), 0) AS passed,
       wall_time, CASE WHEN event_id <> {usual_event_id()} THEN event_id END AS event_id
FROM _batch WHERE type = 'job_finished'"""
_RUN_EVENTS_INSERT = f"""
INSERT INTO run_events BY NAME
SELECT run_id, seq, coalesce(event_id, {usual_event_id()}) AS event_id, type,
       generation, wall_time, data
FROM _batch WHERE type <> 'job_finished'"""
# Events read in Python: a handful per generation.
_PY_TYPES = ("run_started", "generation_finished", "baseline_finished")


def _has_config(record: dict[str, Any] | None) -> bool:
    return record is not None and record.get("config") is not None


def empty_frame() -> pa.Table:
    return FRAME_SCHEMA.empty_table()


def _first_bad_json(lines: list[str]) -> int:
    """Index of the first line that is not JSON (only on the error path)."""
    for index, line in enumerate(lines):
        try:
            json.loads(line)
        except json.JSONDecodeError:
            return index
    return 0


def _python_rows(rows: _Rows, run_id: str, seq: int, type_: str, gen: int | None, d: dict[str, Any]) -> None:
    if type_ == "generation_finished":
        if gen is None:
            raise StoreError(f"run {run_id}: generation_finished event {seq} lacks 'generation'")
        _generation_rows(rows, run_id, seq, gen, d)
    elif type_ == "baseline_finished":
        objectives = d.get("objectives", {})
        rows.add("baselines", {"run_id": run_id, "seq": seq, "generation": gen,
                               **{m: objectives.get(m) for m in METRICS},
                               "problems": _dumps(d.get("problems", {})),
                               "echo": _dumps(d["echo"]) if d.get("echo") else None})


def genome_row(run_id: str, generation: int, genome: Genome | dict[str, Any]) -> dict[str, Any]:
    """A genome (or its JSON, as generation_started carries it where it does) as a genomes row."""

    g = genome if isinstance(genome, Genome) else Genome.model_validate(genome)
    return {"run_id": run_id, "genome_id": g.id, "generation": generation, **g.genes.model_dump(),
            "target_modules": list(g.genes.target_modules), **g.knobs.model_dump(),
            "origin": g.origin, "parents": list(g.parents), "overrides": _dumps(g.overrides),
            "seed": _dumps(g.seed.model_dump())}


class Store:
    """One DuckDB connection. Read-write for the ingestor, read-only for snapshot readers.

    A DuckDB connection must not be shared between threads: other threads use `cursor()`.
    """

    def __init__(self, path: Path | str = ":memory:", *, read_only: bool = False) -> None:
        self.path = str(path)
        self.read_only = read_only
        in_memory = self.path == ":memory:"
        self._writer = None if read_only or in_memory else WriterLock(self.path)
        try:
            self.con = duckdb.connect(self.path, read_only=read_only)
        except duckdb.Error as exc:
            self._release()
            first = str(exc).splitlines()[0]
            if "lock" in first.lower():
                first += " (another process holds it)"
            elif not in_memory:
                first += f"; {REBUILD_HINT}"
            raise StoreError(f"cannot open the store {self.path}: {first}") from None
        self._lock = threading.Lock()  # the store's own methods run one at a time
        self._configured: set[str] = set()  # runs whose row has its config: no upsert per batch
        self.columns_added = 0  # columns the objective set needed on opening: the snapshot is stale
        self.migrated = 0  # migrations applied on opening: the snapshot is stale too
        try:
            if read_only:
                self.check_version()
            else:
                self.migrate()
        except BaseException:
            self.close()
            raise

    def _release(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """BEGIN ... COMMIT; on any error a ROLLBACK, whose own failure never hides the first one
        (after a failed COMMIT no transaction is left to roll back). A DuckDB error becomes one
        line naming the store file: a StoreWriteError when the file could not be written (at
        COMMIT, or an I/O error), else a StoreError (what the batch held was refused)."""
        committing = False
        self.con.execute("BEGIN")
        try:
            yield self.con
            committing = True
            self.con.execute("COMMIT")
        except BaseException as exc:
            try:
                self.con.execute("ROLLBACK")
            except duckdb.Error:
                pass  # the transaction already ended: the error that matters is `exc`
            if isinstance(exc, duckdb.Error):
                text = str(exc).strip()
                first = text.splitlines()[0] if text else type(exc).__name__
                kind = StoreWriteError if committing or isinstance(exc, duckdb.IOException) else StoreError
                raise kind(f"store {self.path}: a write failed and nothing of it was stored ({first})") from None
            raise

    # ------------------------------------------------------------------ schema

    def version(self) -> int:
        exists = self.con.execute("SELECT count(*) FROM information_schema.tables "
                                  "WHERE table_name = 'schema_version'").fetchone()
        if not exists or not exists[0]:
            return 0
        row = self.con.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def check_version(self) -> int:
        version = self.version()
        if version > len(MIGRATIONS):
            raise StoreError(f"{self.path}: schema version {version} is newer than this CORAL "
                             f"({len(MIGRATIONS)}); upgrade CORAL, or: {REBUILD_HINT}")
        return version

    def migrate(self) -> int:
        """Apply the migrations past the recorded version, each in its own transaction."""
        version = self.check_version()
        self.con.execute("CREATE TABLE IF NOT EXISTS schema_version "
                         "(version INTEGER PRIMARY KEY, applied DOUBLE)")
        for number, steps in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._transaction() as con:
                for sql in steps:
                    con.execute(sql)
                con.execute("INSERT INTO schema_version VALUES (?, ?)", [number, time.time()])
            self.migrated += 1
        if len(MIGRATIONS) == SCHEMA_VERSION:  # objective_columns describes the latest schema's tables
            self._follow_objectives()
        return len(MIGRATIONS)

    def _follow_objectives(self) -> None:
        """Columns for every objective (and metric) of the declared set, added where missing."""
        have = self.con.execute("SELECT table_name, column_name FROM information_schema.columns "
                                "WHERE table_schema = 'main'").fetchall()
        existing = {(str(t), str(c)) for t, c in have}
        missing = [(t, c) for t, cols in objective_columns().items() for c in cols if (t, c) not in existing]
        self.columns_added = len(missing)
        if not missing:
            return
        with self._transaction() as con:
            for table, column in missing:
                con.execute(f"ALTER TABLE {table} ADD COLUMN {column} DOUBLE")
            con.execute(evaluations_view(OBJECTIVES))

    # ------------------------------------------------------------------ writing

    def last_seqs(self) -> dict[str, int]:
        return dict(self.con.execute("SELECT run_id, last_seq FROM ingested").fetchall())

    def checkpoint_generations(self) -> dict[str, int]:
        return dict(self.con.execute("SELECT run_id, checkpoint_generation FROM ingested").fetchall())

    def first_mismatch(self, run_id: str, seen: pa.Table) -> int | None:
        """The first of `seen`'s events (seq, type, generation) stored with another type or
        generation: where the run's log was rewritten. Events not stored do not count."""
        if not seen.num_rows:
            return None
        with self._lock:
            self.con.register("_seen", seen.select(["seq", "type", "generation"]))
            try:
                row = self.con.execute(
                    "SELECT min(s.seq) FROM _seen s JOIN events e ON e.run_id = ? AND e.seq = s.seq "
                    "WHERE e.type <> s.type OR e.generation IS DISTINCT FROM s.generation", [run_id]).fetchall()[0]
            finally:
                self.con.unregister("_seen")
        return None if row is None or row[0] is None else int(row[0])

    def parse_lines(self, lines: list[str] | str, where: str, first_line: int = 1) -> pa.Table:
        """JSON event lines (a list, or one text of newline-ended lines) -> a frame (FRAME_SCHEMA),
        parsed by DuckDB; a bad line raises one CoralError naming `where` and its line number
        (`first_line` is the number of the first line)."""
        if isinstance(lines, str):  # split by Arrow: no Python object per line
            if not lines:
                return empty_frame()
            array = pc.split_pattern(pa.array([lines[:-1]], pa.large_string()), "\n").flatten()
        else:
            if not lines:
                return empty_frame()
            array = pa.array(lines, pa.large_string())
        with self._lock:
            self.con.register("_lines", pa.table({"line": array}))
            try:
                parsed = self.con.sql(_PARSE_SQL).to_arrow_table()
            except duckdb.InvalidInputException as exc:
                number = first_line + _first_bad_json(array.to_pylist())
                raise CoralError(f"{where}: corrupt event line {number} ({str(exc).splitlines()[0]})") from None
            finally:
                self.con.unregister("_lines")
        problems = parsed.column("_bad")
        if problems.null_count < len(problems):
            index = int(pc.index(pc.is_valid(problems), True).as_py())
            raise CoralError(f"{where}: line {first_line + index}: {problems[index].as_py()}")
        return parsed.drop_columns(["_bad"]).cast(FRAME_SCHEMA)

    def parse_files(self, paths: list[Path]) -> pa.Table | None:
        """Whole segment files -> one frame in file order, parsed by DuckDB's NDJSON reader (in
        parallel across files); None when any line is not a usable event (the caller then parses
        the lines, which names the bad one)."""
        with self._lock:
            try:
                parsed = self.con.sql(_FILE_SQL, params={"path": [str(p) for p in paths]}).to_arrow_table()
            except duckdb.Error:
                return None
        if parsed.column("_bad").null_count < parsed.num_rows:
            return None
        return parsed.drop_columns(["_bad"]).cast(FRAME_SCHEMA)

    def apply(self, run_id: str, events: list[dict[str, Any]], record: dict[str, Any] | None = None,
              ) -> int:
        """Insert a run's events (dicts; contiguous, in seq order, past its mark) in one transaction."""
        if not events:
            return 0
        lines = [json.dumps(check_event(e, f"run {run_id}"), separators=(",", ":")) for e in events]
        return self.apply_frame(run_id, self.parse_lines(lines, f"run {run_id}"), record)

    def apply_frame(self, run_id: str, frame: pa.Table, record: dict[str, Any] | None = None) -> int:
        """Insert a frame of a run's events (contiguous, in seq order, past its mark) and the rows
        they derive in one transaction, with the run's new mark."""
        return self.apply_frames([(run_id, frame, record)])

    def apply_frames(self, batches: Sequence[tuple[str, pa.Table, dict[str, Any] | None]]) -> int:
        """`apply_frame` for several runs' frames (run id, frame, run record) in one transaction,
        with one INSERT per table for all of them: a transaction of more than a row group
        (122,880 rows) is written as row groups rather than through the WAL, so a catch-up over
        many runs costs about half as much per row."""
        batches = [(run_id, frame, record) for run_id, frame, record in batches if frame.num_rows]
        if not batches:
            return 0
        for run_id, frame, _ in batches:
            others = pc.filter(frame.column("run_id"), pc.not_equal(frame.column("run_id"), run_id))
            if len(others):
                raise StoreError(f"run {run_id}: the batch holds an event of run {others[0].as_py()!r}")
        frame = batches[0][1] if len(batches) == 1 else pa.concat_tables([b[1] for b in batches])
        with self._lock:
            con = self.con
            con.register("_batch", frame)
            try:
                with self._transaction():
                    self._apply_batches(batches)
                self._configured.update(r for r, _, record in batches if _has_config(record))  # once committed
            finally:
                con.unregister("_batch")
        return frame.num_rows

    def _apply_batches(self, batches: Sequence[tuple[str, pa.Table, dict[str, Any] | None]]) -> None:
        """apply_frames' statements, inside its transaction, `_batch` registered."""
        con = self.con
        # The guard that makes a row stored once (the big tables have no key): each run's
        # events must start right past its mark read in this transaction, which then advances.
        marks = self.last_seqs()
        for run_id, part, record in batches:
            seqs = part.column("seq").to_numpy()
            last = marks.get(run_id, -1)
            if seqs[0] != last + 1 or not np.all(np.diff(seqs) == 1):
                raise StoreError(f"run {run_id}: events must continue at seq {last + 1} without gaps")
            marks[run_id] = int(seqs[-1])
            self._ensure_run(run_id, record)
        con.execute(_RUN_EVENTS_INSERT)
        self._insert_jobs()
        self._insert_python_rows()
        for run_id in dict.fromkeys(b[0] for b in batches):
            con.execute("INSERT INTO ingested (run_id, last_seq, updated) VALUES (?, ?, ?) "
                        "ON CONFLICT (run_id) DO UPDATE SET last_seq = excluded.last_seq, "
                        "updated = excluded.updated", [run_id, marks[run_id], time.time()])
            self._refresh_run(run_id)

    def _insert_jobs(self) -> None:
        con = self.con
        missing = con.execute("SELECT run_id, seq, CASE WHEN generation IS NULL THEN 'generation' WHEN genome "
                              "IS NULL THEN 'genome' WHEN problem IS NULL THEN 'problem' ELSE 'sample' END FROM "
                              "_batch WHERE type = 'job_finished' AND (generation IS NULL OR genome IS NULL OR "
                              "problem IS NULL OR sample IS NULL) ORDER BY run_id, seq LIMIT 1").fetchall()
        if missing:
            run_id, seq, what = missing[0]
            raise StoreError(f"run {run_id}: job_finished event {seq} lacks {what!r}")
        con.execute(_JOBS_INSERT)

    def _insert_python_rows(self) -> None:
        con = self.con
        types = ", ".join(f"'{t}'" for t in _PY_TYPES)
        events = con.execute(f"SELECT run_id, seq, type, generation, data FROM _batch WHERE type IN ({types}) "
                             "ORDER BY run_id, seq").fetchall()
        rows = _Rows()
        for run_id, seq, type_, gen, data in events:
            d = json.loads(data)
            _python_rows(rows, run_id, seq, type_, gen, d)
            if type_ == "run_started":
                con.execute("UPDATE runs SET strategy = ?, population = ?, generations = ?, seed = ?, "
                            "train_problems = ?, eval_problems = ? WHERE run_id = ?",
                            [d.get("strategy"), d.get("population"), d.get("generations"),
                             d.get("seed"), _dumps(d.get("train_problems", [])),
                             _dumps(d.get("eval_problems", [])), run_id])
        for name, table in rows.tables():
            view = f"_batch_{name}"
            con.register(view, table)
            try:
                con.execute(f"INSERT OR IGNORE INTO {name} BY NAME SELECT * FROM {view}")
            finally:
                con.unregister(view)

    def _ensure_run(self, run_id: str, record: dict[str, Any] | None) -> None:
        """The run's row, with its config once known (callers mark it `_configured` after commit)."""
        if run_id in self._configured:
            return
        record = record or {}
        config = record.get("config")
        self.con.execute(
            "INSERT INTO runs (run_id, created, config) VALUES (?, ?, ?) ON CONFLICT (run_id) DO "
            "UPDATE SET created = coalesce(runs.created, excluded.created), "
            "config = coalesce(runs.config, excluded.config)",
            [run_id, record.get("created"), _dumps(config) if config is not None else None])

    def _refresh_run(self, run_id: str) -> None:
        """State and progress derived from the stored events, so a rewind needs no bookkeeping."""
        cases = " ".join(f"WHEN '{t}' THEN '{s}'" for t, s in LIFECYCLE.items())
        self.con.execute(f"""
            UPDATE runs SET
              state = (SELECT CASE type {cases} END FROM run_events WHERE run_id = $1
                       AND type IN ({", ".join(f"'{t}'" for t in LIFECYCLE)})
                       ORDER BY seq DESC LIMIT 1),
              last_event = (SELECT type FROM events WHERE run_id = $1 ORDER BY seq DESC LIMIT 1),
              generations_done = (SELECT count(*) FROM generations WHERE run_id = $1),
              updated = $2
            WHERE run_id = $1""", [run_id, time.time()])

    def rewind(self, run_id: str, seq: int) -> None:
        """Forget a run's events from `seq` on: its log was rewritten there (a resume)."""
        with self._lock, self._transaction() as con:
            for table in SEQ_TABLES:
                con.execute(f"DELETE FROM {table} WHERE run_id = ? AND seq >= ?", [run_id, seq])
            con.execute("UPDATE ingested SET last_seq = ?, updated = ? WHERE run_id = ?",
                        [seq - 1, time.time(), run_id])
            self._refresh_run(run_id)

    def forget(self, run_id: str) -> None:
        """Remove every row of a run (its folder was deleted), in one transaction."""
        with self._lock:
            with self._transaction() as con:
                for table in (*SEQ_TABLES, "genomes", "ingested", "unreadable", "reevaluations", "runs"):
                    con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            self._configured.discard(run_id)

    def set_unreadable(self, run_id: str, reason: str | None) -> None:
        """Record why a run cannot be ingested (None: it can again). Its stored rows stay."""
        with self._lock, self._transaction() as con:
            con.execute("DELETE FROM unreadable WHERE run_id = ?", [run_id])
            if reason is not None:
                con.execute("INSERT INTO unreadable VALUES (?, ?, ?)", [run_id, reason, time.time()])

    def unreadable(self) -> dict[str, str]:
        """Run id -> why it cannot be ingested."""
        return dict(self.con.execute("SELECT run_id, reason FROM unreadable").fetchall())

    def reevaluation_stamps(self) -> dict[str, dict[str, str]]:
        """run -> {file name: stamp} of the re-evaluation files stored (read once per ingest cycle)."""
        out: dict[str, dict[str, str]] = {}
        for run_id, name, stamp in self.con.execute("SELECT run_id, file, stamp FROM reevaluations").fetchall():
            out.setdefault(str(run_id), {})[str(name)] = str(stamp)
        return out

    def put_reevaluations(self, run_id: str, rows: list[dict[str, Any]], gone: Sequence[str]) -> None:
        """Store (or replace) re-evaluation rows of a run and drop those of files `gone`, in one transaction."""
        with self._lock, self._transaction() as con:
            for name in [*gone, *(r["file"] for r in rows)]:
                con.execute("DELETE FROM reevaluations WHERE run_id = ? AND file = ?", [run_id, name])
            if rows:
                con.register("_batch_reevaluations", pa.Table.from_pylist(rows))
                try:
                    con.execute("INSERT INTO reevaluations BY NAME SELECT * FROM _batch_reevaluations")
                finally:
                    con.unregister("_batch_reevaluations")

    def registered_runs(self) -> set[str]:
        """Runs the store has read a config.yaml for (their folder existed)."""
        return {r[0] for r in self.con.execute("SELECT run_id FROM runs WHERE config IS NOT NULL").fetchall()}

    def add_genomes(self, run_id: str, rows: list[dict[str, Any]], checkpoint_generation: int | None,
                    record: dict[str, Any] | None = None) -> int:
        """Genomes (first generation wins) and, when given, the checkpoint they were read up to."""
        with self._lock:
            with self._transaction() as con:
                self._ensure_run(run_id, record)
                if rows:
                    con.register("_batch_genomes", pa.Table.from_pylist(rows))
                    try:
                        con.execute("INSERT OR IGNORE INTO genomes BY NAME "
                                    "SELECT * FROM _batch_genomes ORDER BY generation")
                    finally:
                        con.unregister("_batch_genomes")
                if checkpoint_generation is not None:
                    con.execute(
                        "INSERT INTO ingested (run_id, last_seq, checkpoint_generation, updated) "
                        "VALUES (?, -1, ?, ?) ON CONFLICT (run_id) DO UPDATE SET "
                        "checkpoint_generation = excluded.checkpoint_generation",
                        [run_id, checkpoint_generation, time.time()])
            if _has_config(record):
                self._configured.add(run_id)
        return len(rows)

    def snapshot(self, target: Path) -> Path:
        """Checkpoint, copy to a temp file beside `target`, rename over it: readers see whole files.

        Only the writer's own thread writes, and it is here, so the file does not change mid-copy.
        The copy is made by `cp` in a child process: opening and closing the store file in this
        process would drop DuckDB's POSIX lock on it (see the module docstring).
        """
        if self.path == ":memory:":
            raise StoreError("an in-memory store has no file to snapshot")
        with self._lock:
            try:
                self.con.execute("CHECKPOINT")
            except duckdb.Error as exc:
                raise StoreWriteError(f"store {self.path}: CHECKPOINT failed "
                                      f"({str(exc).strip().splitlines()[0]})") from None
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            os.close(fd)
            try:
                done = subprocess.run([_cp(), "--", self.path, temp], capture_output=True,  # nosec B603
                                      text=True, check=False)
                if done.returncode != 0:
                    why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
                    raise StoreWriteError(f"store {self.path}: the snapshot copy to {target} failed ({why})")
                shutil.copymode(self.path, temp)  # mkstemp makes it 0600; readers need the store's mode
                os.replace(temp, target)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
        return target

    def counts(self) -> dict[str, int]:
        names = ("runs", "events", "jobs", "evaluations", "generations", "scores", "genomes", "baselines")
        return {n: int(self.con.execute(f"SELECT count(*) FROM {n}").fetchall()[0][0]) for n in names}

    def close(self) -> None:
        try:
            self.con.close()
        finally:
            self._release()
