"""The ingestor: logs and live partitions, idempotency, gaps, rewinds and faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_store_support import FAKES, REPO, SMOKE, copy_runs, log_events, store_rows

from coral import analysis
from coral.config import load_config
from coral.execution.transport import LocalTransport
from coral.home import Home
from coral.run.events import EventLog, segments
from coral.run.lifecycle import resolve_config, run_from_config
from coral.services.backends import run_context
from coral.store.ingest import Ingestor, _contiguous
from coral.store.store import Store, snapshot_path


def reference_rows(home: Home, run_id: str) -> dict[str, list[tuple]]:
    """What a clean ingestion of the finished logs gives: the expected store content."""
    with Ingestor(home, None, db_path=":memory:") as ing:
        ing.run_once()
        return store_rows(ing.store.con, run_id)


def test_ingest_from_logs_matches_the_log(template_home: Path, tmp_path: Path) -> None:
    home = copy_runs(template_home, tmp_path)
    with Ingestor(home, None) as ing:
        assert ing.run_once(snapshot=True) == sum(len(log_events(home, r)) for r in ("alpha", "beta"))
        events = log_events(home, "alpha")
        con = ing.store.con
        assert con.execute("SELECT count(*) FROM events WHERE run_id='alpha'").fetchone()[0] == len(events)
        jobs = [e for e in events if e["type"] == "job_finished"]
        assert con.execute("SELECT count(*) FROM evaluations WHERE run_id='alpha'").fetchone()[0] == len(jobs)
        finished = [e for e in events if e["type"] == "generation_finished"]
        rows = con.execute("SELECT generation, best_fitness, mean_bugfix, cache_hits FROM generations "
                           "WHERE run_id='alpha' ORDER BY generation").fetchall()
        assert rows == [(e["generation"], e["data"]["best"]["fitness"], e["data"]["mean"]["bugfix"],
                         e["data"]["cache"]["hits"]) for e in finished]
        first = jobs[0]["data"]
        row = con.execute("SELECT bugfix, syntax, fixed, passed, total FROM evaluations WHERE run_id='alpha' "
                          "AND seq = ?", [jobs[0]["seq"]]).fetchone()
        assert row == (first["objectives"]["bugfix"], first["objectives"]["syntax"], first["passed_all"],
                       sum(c["passed"] for c in first["cases"]), len(first["cases"]))
        state = con.execute("SELECT state, generations_done FROM runs WHERE run_id='alpha'").fetchone()
        assert state == ("finished", 3)
        # Noise control and baselines: evaluation counts per genome, the echo baseline.
        counts = {(e["generation"], g): c for e in finished for g, c in e["data"]["evaluations"].items()}
        stored = {(g, i): c for g, i, c in con.execute(
            "SELECT generation, genome_id, evaluations FROM scores WHERE run_id='alpha'").fetchall()}
        assert stored == counts and max(stored.values()) >= 2
        echo = con.execute("SELECT echo FROM baselines WHERE run_id='alpha'").fetchone()[0]
        assert json.loads(echo) == next(e for e in events if e["type"] == "baseline_finished")["data"]["echo"]
        checkpoint_ids = set()
        for path in home.checkpoints_dir("alpha").glob("gen-*.json"):
            data = json.loads(path.read_text())
            checkpoint_ids |= {s for s in data["scores"]}
        genomes = {r[0] for r in con.execute("SELECT genome_id FROM genomes WHERE run_id='alpha'").fetchall()}
        assert checkpoint_ids <= genomes
        assert ing.run_once() == 0  # idempotent: nothing new, nothing twice
        assert con.execute("SELECT count(*) FROM events").fetchone()[0] == ing.status.events
    assert snapshot_path(home).is_file()


def test_live_partition_alone_and_a_gap_waits_for_the_log(template_home: Path, tmp_path: Path) -> None:
    """With no local log (a Modal run), live events are applied; a skipped publish holds the rest
    back until the log shows up."""
    source = copy_runs(template_home, tmp_path / "source", ["beta"])
    home = Home(tmp_path / "home")
    (home.runs / "beta").mkdir(parents=True)
    (home.runs / "beta" / "config.yaml").write_text(source.run_config("beta").read_text())
    events = log_events(source, "beta")
    with LocalTransport(home.queue_db) as transport:
        queue = transport.queue("events")
        queue.put_many([json.dumps(e) for e in events[:10]], partition="beta")
        queue.put_many([json.dumps(e) for e in events[11:]], partition="beta")  # seq 10 skipped
    with Ingestor(home) as ing:
        assert ing.run_once() == 10
        assert ing.status.live == len(events) - 1
        assert ing.status.waiting == {"beta": len(events) - 11}
        assert ing.run_once() == 0  # still waiting: the gap is not filled by guessing
        (home.events_dir("beta")).mkdir()
        for path in source.events_dir("beta").iterdir():
            (home.events_dir("beta") / path.name).write_bytes(path.read_bytes())
        assert ing.run_once() == len(events) - 10
        assert ing.status.waiting == {}
        assert store_rows(ing.store.con, "beta")["events"] == reference_rows(source, "beta")["events"]


def test_torn_line_waits_and_corrupt_line_is_named(template_home: Path, tmp_path: Path) -> None:
    home = copy_runs(template_home, tmp_path, ["beta"])
    segment = sorted(home.events_dir("beta").glob("*.jsonl"))[0]
    lines = segment.read_bytes().splitlines(keepends=True)
    segment.write_bytes(b"".join(lines[:5]) + lines[5][:40])  # a writer killed mid-line
    with Ingestor(home, None) as ing:
        assert ing.run_once() == 5
        segment.write_bytes(b"".join(lines))
        assert ing.run_once() == len(lines) - 5
        with open(segment, "ab") as handle:
            handle.write(b"{not json\n")
        assert ing.run_once() == 0
        reason = ing.store.unreadable()["beta"]  # recorded, not raised: other runs go on
        assert f"{segment.name}: corrupt event line {len(lines) + 1} " in reason
        assert ing.run_once() == 0 and "corrupt event line" in ing.store.unreadable()["beta"]  # never skipped
        segment.write_bytes(b"".join(lines))  # repaired: readable again
        ing.run_once()
        assert ing.store.unreadable() == {}


def test_rewritten_log_rewinds_the_store(tmp_path: Path) -> None:
    """A stopped run resumed from its checkpoint re-emits other events at the same seqs."""
    home = Home(tmp_path).ensure()
    (home.runs / "r").mkdir()
    (home.runs / "r" / "config.yaml").write_text("run_id: r\nconfig: {seed: 0}\n")
    log = EventLog("r", home.events_dir("r"))
    log.emit("run_started", {"population": 2})
    log.emit("generation_started", {"genomes": []}, 0)
    log.emit("run_stopped", {"reason": "stop requested"})
    with Ingestor(home, None) as ing:
        ing.run_once()
        assert ing.store.con.execute("SELECT state FROM runs").fetchone()[0] == "stopped"
        resumed = EventLog("r", home.events_dir("r"), start_seq=1)  # cuts seq >= 1
        resumed.emit("generation_started", {"genomes": []}, 0)
        resumed.emit("run_finished", {"generations": 1})
        ing.run_once()
        types = ing.store.con.execute("SELECT type FROM events ORDER BY seq").fetchall()
        assert [t for (t,) in types] == ["run_started", "generation_started", "run_finished"]
        assert ing.store.con.execute("SELECT state FROM runs").fetchone()[0] == "finished"
        assert ing.status.rewinds == 1


def _run_in_thread(home: Home, run_id: str) -> threading.Thread:
    # The benchmark's full split (19 eval problems), not smoke's 6: the run must outlast the ingestor.
    config = load_config(SMOKE, ["generations=3", "population=4",
                                 f"benchmark.split={REPO / 'data' / 'problems' / 'split.json'}"])
    config = resolve_config(config, backend="serial")
    context = run_context(config, home, handlers=FAKES, threads=1)
    thread = threading.Thread(target=run_from_config, args=(config, run_id, context), daemon=True)
    thread.start()
    return thread


def _count(home: Home, run_id: str) -> int:
    path = home.events_dir(run_id)
    return sum(len(p.read_bytes().splitlines()) for p in path.glob("*.jsonl")) if path.is_dir() else 0


@pytest.mark.slow
def test_ingestor_stopped_mid_run_and_restarted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop (close the store) while a run goes on, reopen: it catches up, nothing missing or twice;
    analysis reads in another thread all along."""
    monkeypatch.setenv("CORAL_FAKE_SLEEP", "0.003")
    home = Home(tmp_path).ensure()
    engine = _run_in_thread(home, "live")
    ing = Ingestor(home, snapshot_every=0.2, interval=0.05).start()
    errors: list[BaseException] = []
    seen: list[int] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                if snapshot_path(home).is_file():
                    runs = analysis.list_runs(home)
                    seen.append(int(runs["generations_done"].fillna(0).sum()))
            except BaseException as exc:  # any failure fails the test below
                errors.append(exc)
            time.sleep(0.02)

    reading = threading.Thread(target=reader, daemon=True)
    reading.start()
    deadline = time.monotonic() + 60
    while _count(home, "live") < 40 and time.monotonic() < deadline:
        time.sleep(0.02)
    ing.stop()  # mid-run: the engine goes on writing events
    assert engine.is_alive(), "the run ended before the ingestor was stopped: slow the fakes down"
    engine.join(120)
    ing = Ingestor(home)
    ing.run_once(snapshot=True)
    done.set()
    reading.join(10)
    assert not errors, errors[0]
    assert seen and seen == sorted(seen)  # a reader never sees the store go back
    got = store_rows(ing.store.con, "live")
    ing.stop()
    assert got == reference_rows(home, "live")
    assert len(got["events"]) == _count(home, "live")


@pytest.mark.slow
def test_killed_ingest_process_restarts_without_loss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`coral ingest --follow` killed with SIGKILL mid-run, then another process reads the
    snapshot while a new ingestor holds the store, and the new ingestor catches up exactly."""
    monkeypatch.setenv("CORAL_FAKE_SLEEP", "0.003")
    home = Home(tmp_path).ensure()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update(CORAL_HOME=str(home.root), PYTHONPATH=str(REPO))
    engine = _run_in_thread(home, "killed")
    proc = subprocess.Popen([sys.executable, "-m", "coral", "ingest", "--follow", "--interval", "0.05"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while _count(home, "killed") < 60 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    engine.join(120)
    with Ingestor(home) as ing:
        ing.run_once(snapshot=True)
        out = subprocess.run([sys.executable, "-c", "from coral import analysis; "
                              "print(analysis.list_runs()['generations_done'].tolist())"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "[3]"
        assert store_rows(ing.store.con, "killed") == reference_rows(home, "killed")


def test_second_writer_gets_one_clear_line(tmp_path: Path) -> None:
    home = Home(tmp_path).ensure()
    with Ingestor(home, None):
        code = "from coral.store.ingest import Ingestor; Ingestor(backend=None)"
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("MODAL_")},
               "CORAL_HOME": str(home.root)}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert f"in use by process {os.getpid()}" in out.stderr and "StoreError" in out.stderr


def test_contiguous_orders_keeps_the_later_duplicate_and_stops_at_a_gap() -> None:
    def line(seq: int, wall: float) -> str:
        return json.dumps({"event_id": f"r:{seq:08d}", "run_id": "r", "seq": seq, "type": "run_paused",
                           "generation": None, "data": {}, "wall_time": wall})

    frame = Store().parse_lines([line(3, 0), line(1, 0), line(2, 0), line(2, 9), line(5, 0), line(0, 0)], "x")
    ready, rest = _contiguous(frame, 0)  # seq 0 is at or below the mark: callers drop it first
    assert ready.column("seq").to_pylist() == [] and rest.num_rows == 5
    ready, rest = _contiguous(frame.slice(0, 5), 0)
    assert ready.column("seq").to_pylist() == [1, 2, 3]
    assert ready.column("wall_time").to_pylist() == [0, 9, 0]  # the later seq-2 row won
    assert rest.column("seq").to_pylist() == [5]


def _segmented_run(home: Home, run_id: str, monkeypatch: pytest.MonkeyPatch, jobs: int = 12) -> list[Path]:
    """A run whose log rolls over every few events, so all segments but the last are sealed."""
    monkeypatch.setattr("coral.run.events.SEGMENT_BYTES", 600)
    (home.runs / run_id).mkdir(parents=True)
    (home.runs / run_id / "config.yaml").write_text(f"run_id: {run_id}\nconfig: {{seed: 0}}\n")
    log = EventLog(run_id, home.events_dir(run_id))
    log.emit("run_started", {"population": 1})
    for i in range(jobs):
        log.emit("job_finished", {"genome": "g", "problem": f"p{i}", "sample": 0, "cases": [{"passed": True}],
                                  "objectives": {"bugfix": 1.0}, "passed_all": True}, 0)
    return sorted(home.events_dir(run_id).glob("*.jsonl"))


def test_sealed_segments_of_several_runs_are_read_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = Home(tmp_path).ensure()
    assert len(_segmented_run(home, "a", monkeypatch)) > 2 and len(_segmented_run(home, "b", monkeypatch)) > 2
    calls: list[list[Path]] = []
    parse_files = Store.parse_files
    monkeypatch.setattr(Store, "parse_files", lambda self, paths: calls.append(paths) or parse_files(self, paths))
    with Ingestor(home, None, db_path=":memory:") as ing:
        assert ing.run_once() == 26
        # each run's sealed segments went through DuckDB's own reader, all in one call
        assert [len(paths) for paths in calls] == [len(segments(home.events_dir(r))) - 1 for r in ("a", "b")]
        assert ing.store.last_seqs() == {"a": 12, "b": 12}
        assert ing.store.con.execute("SELECT run_id, count(*), sum(passed) FROM evaluations GROUP BY run_id "
                                     "ORDER BY run_id").fetchall() == [("a", 12, 12), ("b", 12, 12)]
        assert ing.run_once() == 0  # nothing twice


def test_corrupt_line_in_a_sealed_segment_is_named_and_holds_back_only_its_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = Home(tmp_path).ensure()
    _segmented_run(home, "a", monkeypatch)
    sealed = _segmented_run(home, "b", monkeypatch)[1]
    lines = sealed.read_bytes().splitlines(keepends=True)
    sealed.write_bytes(lines[0] + b'{"not": "an event"}\n' + b"".join(lines[2:]))
    with Ingestor(home, None, db_path=":memory:") as ing:
        ing.run_once()
        assert f"{sealed.name}: line 2: event lacks 'run_id'" in ing.store.unreadable()["b"]
        # the other run was applied all the same, and this one up to the segment with the bad line
        assert ing.store.last_seqs() == {"a": 12, "b": int(sealed.stem) - 1}


def test_a_run_whose_batch_fails_does_not_hold_back_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = Home(tmp_path).ensure()
    _segmented_run(home, "a", monkeypatch)
    _segmented_run(home, "c", monkeypatch)
    (home.runs / "b").mkdir()
    (home.runs / "b" / "config.yaml").write_text("run_id: b\nconfig: {seed: 0}\n")
    EventLog("b", home.events_dir("b")).emit("job_finished", {"problem": "p", "sample": 0}, 0)  # no genome
    with Ingestor(home, None, db_path=":memory:") as ing:
        ing.run_once()
        assert ing.store.unreadable() == {"b": "run b: job_finished event 0 lacks 'genome'"}
        assert ing.store.last_seqs() == {"a": 12, "c": 12}


def test_a_deleted_run_leaves_the_store_and_the_others_stay(template_home: Path, tmp_path: Path) -> None:
    import shutil

    home = copy_runs(template_home, tmp_path)
    with Ingestor(home, None) as ing:
        ing.run_once(snapshot=True)
        before = {t: n for t, n in ing.store.counts().items() if n}
        shutil.rmtree(home.run_dir("alpha"))  # what the Runs page's Delete does
        ing.run_once(snapshot=True)
        con = ing.store.con
        for table in ("runs", "ingested", "run_events", "jobs", "generations", "scores", "genomes", "baselines"):
            assert con.execute(f"SELECT count(*) FROM {table} WHERE run_id = 'alpha'").fetchone()[0] == 0, table
        assert con.execute("SELECT count(*) FROM events WHERE run_id = 'beta'").fetchone()[0] == len(
            log_events(home, "beta"))
        assert 0 < ing.store.counts()["evaluations"] < before["evaluations"]
    assert list(analysis.list_runs(home)["run_id"]) == ["beta"]
