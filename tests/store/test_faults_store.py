"""Faults of the run store, performed for real: a second writer while `coral ingest --follow`
runs, a corrupt checkpoint and a folder that is not a run id beside good runs, a COMMIT that the
file system refuses, a store file that is not a DuckDB database (issue "Faults that still hurt",
points 1, 4, 5 and 8)."""

from __future__ import annotations

import html
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from test_store_support import REPO, copy_runs, log_events, store_rows

from coral import analysis
from coral.home import Home
from coral.store.ingest import Ingestor
from coral.store.store import snapshot_path


def env_for(home: Home) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update(CORAL_HOME=str(home.root), PYTHONPATH=str(REPO))
    return env


def coral(home: Home, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "coral", *args], cwd=REPO, env=env_for(home),
                          capture_output=True, text=True, timeout=60, **kw)


def one_line(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert done.stderr.startswith("coral: error: ") and done.stderr.count("\n") == 1, done.stderr[-2000:]
    for needle in needles:
        assert needle in done.stderr, (needle, done.stderr)


def test_the_writer_keeps_its_lock_after_snapshots(template_home: Path, tmp_path: Path) -> None:
    """Point 1: the snapshot copied store.duckdb in the writer process, which dropped DuckDB's
    POSIX lock; a second `coral ingest --follow` then opened the store and wrote too."""
    home = copy_runs(template_home, tmp_path)
    first = subprocess.Popen([sys.executable, "-m", "coral", "ingest", "--follow", "--interval", "0.05"],
                             cwd=REPO, env=env_for(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    try:
        assert first.stdout is not None
        assert first.stdout.readline().startswith("ingested ")  # the first cycle and its snapshot
        assert snapshot_path(home).is_file()
        # DuckDB's own lock is still held: no other process may open the file, even read-only.
        with pytest.raises(duckdb.IOException, match="lock"):
            duckdb.connect(str(home.store_db), read_only=True)
        second = coral(home, "ingest")
        one_line(second, f"in use by process {first.pid}", str(home.store_db))
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        first.communicate(timeout=30)
    with Ingestor(home, None) as ing:  # nothing applied twice by a second writer
        ing.run_once()
        for run_id in ("alpha", "beta"):
            assert ing.store.last_seqs()[run_id] == len(log_events(home, run_id)) - 1
            assert len(store_rows(ing.store.con, run_id)["events"]) == len(log_events(home, run_id))


def test_one_bad_run_does_not_block_the_others(template_home: Path, tmp_path: Path) -> None:
    """Point 4: a corrupt checkpoint (a JSON list) aborted `coral ingest` for every run (a good
    run got 0 rows, no snapshot); a folder `runs/bad name/` broke `coral runs` and the ingestor."""
    home = copy_runs(template_home, tmp_path)
    bad = sorted(home.checkpoints_dir("beta").glob("gen-*.json"))[-1]
    bad.write_text("[1, 2, 3]\n")
    (home.runs / "bad name").mkdir()
    (home.runs / "bad name" / "config.yaml").write_text("run_id: bad name\nconfig: {}\n")
    done = coral(home, "ingest", "--transport", "none")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("\n") == 1 and "run beta cannot be ingested" in done.stderr
    assert f"{bad}: not a checkpoint (a JSON list, expected an object)" in done.stderr
    assert snapshot_path(home).is_file()
    with Ingestor(home, None, db_path=":memory:") as clean:  # alpha alone, as it should be
        clean.run_once()
        expected = store_rows(clean.store.con, "alpha")
    con = duckdb.connect(str(snapshot_path(home)), read_only=True)
    try:
        assert store_rows(con, "alpha") == expected  # every row of the good run
        assert con.execute("SELECT count(*) FROM events WHERE run_id = 'beta'").fetchone()[0] == len(
            log_events(home, "beta"))  # the bad run's events are in; only its last checkpoint is not
        assert con.execute("SELECT reason FROM unreadable").fetchall() == [
            (f"{bad}: not a checkpoint (a JSON list, expected an object)",)]
    finally:
        con.close()
    listed = coral(home, "runs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["run_id"] for r in json.loads(listed.stdout)] == ["alpha", "beta"]
    runs = analysis.list_runs(home).set_index("run_id")
    assert runs.loc["beta", "unreadable"].endswith("expected an object)")
    assert runs.loc["alpha", "unreadable"] != runs.loc["alpha", "unreadable"]  # NaN: readable

    bad.write_text(json.dumps(json.loads((template_home / "runs" / "beta" / "checkpoints" / bad.name)
                                         .read_text())))  # repaired
    with Ingestor(home, None) as ing:
        ing.run_once()
        assert ing.store.unreadable() == {} and ing.status.unreadable == {}


def test_the_runs_page_shows_an_unreadable_run(template_home: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    home = copy_runs(template_home, tmp_path)
    bad = sorted(home.checkpoints_dir("beta").glob("gen-*.json"))[0]
    bad.write_bytes(b"\x00\xff not json")
    assert coral(home, "ingest", "--transport", "none").returncode == 0
    monkeypatch.setenv("CORAL_HOME", str(home.root))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/runs.py").run()
    assert not at.exception, [e.value for e in at.exception]
    # The reason is shown as literal text (coral.services.text.literal: punctuation as character
    # references, which the browser renders as the characters themselves).
    warnings = [html.unescape(w.value) for w in at.warning]
    assert warnings == [f"Run beta cannot be ingested: {bad}: unreadable checkpoint (not UTF-8 text)"]
    import streamlit as st

    st.cache_resource.clear()  # stops the page's ingestor thread


def _limit_file_size(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_failed_commit_is_one_line_with_the_real_cause(template_home: Path, tmp_path: Path) -> None:
    """Point 5: a COMMIT the file system refused (here a 40 KB file size limit, as a full disk
    would) was followed by a ROLLBACK that failed too ("no transaction is active"), and that
    traceback hid the real error."""
    home = copy_runs(template_home, tmp_path)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # inherited: the write fails with EFBIG
    try:
        done = coral(home, "ingest", "--transport", "none",
                     preexec_fn=lambda: _limit_file_size(40 * 1024))
    finally:
        signal.signal(signal.SIGXFSZ, previous)
    one_line(done, str(home.store_db), "File too large", "nothing of it was stored")
    assert "rollback" not in done.stderr.lower()


def test_a_corrupt_store_says_it_is_rebuilt_from_the_logs(template_home: Path, tmp_path: Path) -> None:
    """Point 8: the corrupt-store error did not say that the store can be rebuilt from the logs."""
    home = copy_runs(template_home, tmp_path)
    home.store_db.write_bytes(b"this is not a DuckDB file" * 100)
    one_line(coral(home, "ingest"), str(home.store_db), "rebuilds it from the logs")
    home.store_db.unlink()  # as the line says: move it aside, ingest again
    with Ingestor(home, None) as ing:
        ing.run_once()
        assert ing.store.con.execute("SELECT count(*) FROM generations").fetchone()[0] == 3 + 2
