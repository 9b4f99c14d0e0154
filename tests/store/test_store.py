"""The store's schema, migrations and write contract."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from coral.errors import CoralError
from coral.store.schema import OBJECTIVES, SCHEMA_VERSION
from coral.store.store import Store, StoreError


def _event(seq: int, type_: str = "run_started", **data) -> dict:
    return {"event_id": f"r:{seq:08d}", "run_id": "r", "seq": seq, "type": type_, "generation": None,
            "data": data, "wall_time": 0.0}


def test_migrations_apply_once_and_newer_stores_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    store = Store(path)
    assert store.version() == SCHEMA_VERSION
    store.close()
    store = Store(path)  # reopening applies nothing twice
    assert store.con.execute("SELECT count(*) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    store.con.execute("INSERT INTO schema_version VALUES (?, 0)", [SCHEMA_VERSION + 1])
    store.close()
    with pytest.raises(StoreError, match="newer than this CORAL"):
        Store(path)


def test_apply_is_contiguous_and_atomic(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    assert store.apply("r", [_event(0), _event(1, "generation_started", genomes=[])]) == 2
    with pytest.raises(StoreError, match="continue at seq 2"):
        store.apply("r", [_event(3, "run_paused")])
    bad = [_event(2, "run_paused"), {**_event(3, "job_finished"), "generation": 0}]  # lacks genome
    with pytest.raises(StoreError, match="event 3 lacks 'genome'"):
        store.apply("r", bad)
    assert store.last_seqs() == {"r": 1}  # nothing of the failed batch stayed
    assert store.con.execute("SELECT count(*) FROM events").fetchone()[0] == 2
    assert store.con.execute("SELECT state FROM runs").fetchone()[0] == "running"


def test_snapshot_is_a_readable_copy(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    store.apply("r", [_event(0)])
    target = store.snapshot(tmp_path / "snap.duckdb")
    store.apply("r", [_event(1, "run_finished")])
    reader = duckdb.connect(str(target), read_only=True)  # while the writer holds its own file
    assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    reader.close()
    store.snapshot(target)
    reader = Store(target, read_only=True)
    assert reader.con.execute("SELECT state FROM runs").fetchone()[0] == "finished"
    with pytest.raises(StoreError, match="in-memory"):
        Store().snapshot(tmp_path / "x.duckdb")


def test_parse_lines_reads_a_text_and_names_the_bad_line() -> None:
    store = Store()
    good, done = json.dumps(_event(0)), json.dumps(_event(1, "run_finished"))
    frame = store.parse_lines(f"{good}\n{done}\n", "seg")
    assert frame.column("seq").to_pylist() == [0, 1]
    assert frame.column("type").to_pylist() == ["run_started", "run_finished"]
    assert json.loads(frame.column("data")[0].as_py()) == {}
    with pytest.raises(CoralError, match=r"^seg: corrupt event line 12 "):
        store.parse_lines([good, "{not json"], "seg", first_line=11)
    with pytest.raises(CoralError, match=r"^seg: line 3: event is not a JSON object"):
        store.parse_lines([good, done, "[1]"], "seg")
    with pytest.raises(CoralError, match="unknown type 'bogus'"):
        store.parse_lines([json.dumps({**_event(0), "type": "bogus"})], "seg")
    with pytest.raises(CoralError, match="lacks 'seq'"):
        store.parse_lines([json.dumps({k: v for k, v in _event(0).items() if k != "seq"})], "seg")
    with pytest.raises(CoralError, match="or no data"):
        store.parse_lines([json.dumps({**_event(0), "data": [1]})], "seg")


def test_job_rows_are_derived_in_sql() -> None:
    store = Store()
    job = {**_event(1, "job_finished"), "generation": 0, "data": {
        "genome": "g", "problem": "p", "sample": 2, "raw": "r", "candidate": "c", "passed_all": False,
        "cases": [{"passed": True}, {"passed": False}, {"passed": True}], "timings": {"worker": "w"},
        "objectives": {"bugfix": 0.5, "syntax": 1.0}}}
    store.apply("r", [_event(0), job])
    assert store.con.execute("SELECT genome_id, problem, sample, bugfix, syntax, style, fixed, passed, total "
                             "FROM evaluations").fetchall() == [("g", "p", 2, 0.5, 1.0, 0.0, False, 2, 3)]
    worker, cases = store.con.execute("SELECT worker, cases FROM jobs").fetchall()[0]
    assert worker == "w" and json.loads(cases) == job["data"]["cases"]
    assert store.con.execute("SELECT data FROM events WHERE seq = 1").fetchall() == [(None,)]


def test_apply_frames_takes_several_runs_in_one_transaction() -> None:
    store = Store()
    frame = store.parse_lines([json.dumps(_event(0))], "a")
    other = store.parse_lines([json.dumps({**_event(0), "run_id": "s", "event_id": "s:0"})], "s")
    assert store.apply_frames([("r", frame, None), ("s", other, None)]) == 2
    assert store.last_seqs() == {"r": 0, "s": 0}
    late = store.parse_lines([json.dumps({**_event(1, "run_finished"), "run_id": "s"})], "s")
    with pytest.raises(StoreError, match="run r: events must continue at seq 1"):  # r again at 0: a repeat
        store.apply_frames([("s", late, None), ("r", frame, None)])
    assert store.last_seqs() == {"r": 0, "s": 0}  # all or nothing: s did not advance either
    assert store.con.execute("SELECT count(*) FROM events").fetchone()[0] == 2


def _version_1_store_with_a_job(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store as CORAL wrote it at schema version 1: an event, a job and its evaluation row,
    written with the SQL of that version (today's insert code targets today's tables)."""
    from coral.store import schema as store_schema

    monkeypatch.setattr("coral.store.store.MIGRATIONS", store_schema.MIGRATIONS[:1])
    store = Store(path)
    store.con.execute("INSERT INTO runs (run_id) VALUES ('r')")
    store.con.execute("INSERT INTO events VALUES ('r', 0, 'r:00000000', 'run_started', NULL, 1.5, '{}'), "
                      "('r', 1, 'custom-id', 'job_finished', 0, 2.5, NULL)")
    store.con.execute("""INSERT INTO jobs VALUES ('r', 1, 0, 'g', 'p', 0, 'raw', 'cand', '[{"passed":true}]', true,
                      '{}', 'w')""")
    store.con.execute("INSERT INTO evaluations VALUES ('r', 1, 0, 'g', 'p', 0, 0.9, 0.8, 0.7, 0.6, 0.5, true, 1, 1)")
    store.close()
    monkeypatch.undo()


def test_migrations_keep_every_row_and_store_a_job_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.duckdb"
    _version_1_store_with_a_job(path, monkeypatch)
    store = Store(path)
    assert store.version() == SCHEMA_VERSION >= 3
    assert {k: v for k, v in store.counts().items() if v} == {"runs": 1, "events": 2, "jobs": 1, "evaluations": 1}
    # 2: the big tables lost their keys; 3: a job is one row, evaluations and events are views over it.
    keys = store.con.execute("SELECT table_name FROM information_schema.table_constraints WHERE constraint_type "
                             "= 'PRIMARY KEY' AND table_name IN ('run_events', 'jobs')").fetchall()
    assert keys == []
    views = store.con.execute("SELECT table_name FROM information_schema.tables WHERE table_type = 'VIEW' "
                              "ORDER BY 1").fetchall()
    assert views == [("evaluations",), ("events",)]
    assert store.con.execute("SELECT count(*) FROM run_events").fetchone()[0] == 1
    # an objective added since (fix_chance) is NULL for a job scored before it existed: not measured
    added = (None,) * (len(OBJECTIVES) - 5)
    assert store.con.execute("SELECT * FROM evaluations").fetchall() == [
        ("r", 1, 0, "g", "p", 0, 0.9, 0.8, 0.7, 0.6, 0.5, *added, True, 1, 1)]
    assert store.con.execute("SELECT seq, event_id, type, generation, wall_time FROM events ORDER BY seq").fetchall() \
        == [(0, "r:00000000", "run_started", None, 1.5), (1, "custom-id", "job_finished", 0, 2.5)]
    # and the migrated store takes new events where the old ones stopped
    job = {**_event(2, "job_finished"), "generation": 0,
           "data": {"genome": "g", "problem": "q", "sample": 0, "cases": [{"passed": False}, {"passed": True}],
                    "objectives": {"bugfix": 0.5}}}
    store.con.execute("INSERT INTO ingested (run_id, last_seq) VALUES ('r', 1)")
    store.apply("r", [job])
    assert store.con.execute("SELECT problem, bugfix, passed, total FROM evaluations ORDER BY seq").fetchall() == [
        ("p", 0.9, 1, 1), ("q", 0.5, 1, 2)]
    assert store.con.execute("SELECT event_id FROM events WHERE seq = 2").fetchall() == [("r:00000002",)]
    odd = {**job, "seq": 3, "event_id": "from-elsewhere", "data": {**job["data"], "problem": "z"}}
    store.apply("r", [odd])  # an id other than RUN_ID:SEQ is kept, not derived
    assert store.con.execute("SELECT event_id FROM events WHERE seq = 3").fetchall() == [("from-elsewhere",)]


_NEW_OBJECTIVE = """
import json, sys
from pydantic import Field
import coral.config as config

class Weights(config.ObjectiveWeights):  # what adding an objective's weight in coral/config.py does
    novelty: float = Field(default=0.5, ge=0.0)

config.ObjectiveWeights = Weights
from coral.evolution.selection import OBJECTIVES
from coral.store.store import Store

store = Store(sys.argv[1])
job = {"event_id": "r:00000002", "run_id": "r", "seq": 2, "type": "job_finished", "generation": 0,
       "wall_time": 0.0, "data": {"genome": "g", "problem": "q", "sample": 0, "cases": [],
       "objectives": {**dict.fromkeys(OBJECTIVES, 0.25), "novelty": 0.75}}}
store.apply("r", [job])
print(json.dumps({"objectives": OBJECTIVES, "added": store.columns_added, "rows": store.con.execute(
    "SELECT problem, bugfix, novelty FROM evaluations ORDER BY seq").fetchall(), "columns": sorted(
    t + "." + c for t, c in store.con.execute("SELECT table_name, column_name FROM information_schema.columns "
                                            "WHERE column_name LIKE '%novelty%'").fetchall())}))
store.close()
"""


def test_a_new_objective_needs_no_store_migration(tmp_path: Path) -> None:
    """The objective set is declared once (coral.config.ObjectiveWeights): a store written before an
    objective existed gains its columns on opening, old rows NULL, new rows stored."""
    import subprocess
    import sys

    path = tmp_path / "s.duckdb"
    store = Store(path)
    old = {**_event(1, "job_finished"), "generation": 0, "data": {
        "genome": "g", "problem": "p", "sample": 0, "cases": [], "objectives": {"bugfix": 0.5}}}
    store.apply("r", [_event(0), old])
    store.close()
    done = subprocess.run([sys.executable, "-c", _NEW_OBJECTIVE, str(path)], capture_output=True, text=True,
                          timeout=120, check=False, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["objectives"][-1] == "novelty" and out["added"] == 5  # jobs, scores, baselines, best_ and mean_
    assert out["rows"] == [["p", 0.5, None], ["q", 0.25, 0.75]]
    assert {"jobs.novelty", "scores.novelty", "baselines.novelty", "generations.best_novelty",
            "generations.mean_novelty", "evaluations.novelty"} <= set(out["columns"])
    assert Store(path).columns_added == 0  # the current set's columns are all there (extra ones stay)
