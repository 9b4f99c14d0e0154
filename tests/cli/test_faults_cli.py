"""Faults an operator meets at the command line, performed for real through the `coral` CLI:
a run id registered twice at once, bad run ids, bad flags, corrupt files. Each must end in one
line naming what is wrong (issue "Faults that still hurt", points 5, 6 and 8)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"
FAKES = "coral.testing.fakes:HANDLERS"


def coral(home: Path, *args: str, timeout: float = 60, env: dict[str, str] | None = None,
          ) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    full.update({"CORAL_HOME": str(home), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **(env or {})})
    return subprocess.run([sys.executable, "-m", "coral", *args], cwd=REPO, env=full,
                          capture_output=True, text=True, timeout=timeout)


def one_line(done: subprocess.CompletedProcess, *needles: str) -> str:
    """The command failed with exactly one `coral: error:` line holding every needle."""
    assert done.returncode == 2, (done.returncode, done.stdout[-500:], done.stderr[-2000:])
    assert done.stderr.startswith("coral: error: ") and done.stderr.count("\n") == 1, done.stderr[-2000:]
    for needle in needles:
        assert needle in done.stderr, (needle, done.stderr)
    return done.stderr


@pytest.mark.slow
def test_two_detached_runs_of_one_id_one_succeeds(tmp_path: Path) -> None:
    """Point 6: two `coral run --detach --run-id dup2` at once. Before, both said "registered;
    running in the background" while the second child had failed with "already exists"."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update({"CORAL_HOME": str(home), "PYTHONPATH": str(REPO), "CORAL_FAKE_SLEEP": "0.05"})
    cmd = [sys.executable, "-m", "coral", "run", str(SMOKE), "--run-id", "dup2", "--handlers", FAKES,
           "--backend", "serial", "--detach"]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    failed = next(err for p, (_, err) in zip(procs, outs, strict=True) if p.returncode == 2)
    assert failed.count("\n") == 1 and "already exists" in failed, failed
    record = (home / "runs" / "dup2" / "config.yaml").read_text()
    assert record.count("run_id: dup2") == 1  # one whole record, not two interleaved


def test_run_registration_is_exclusive(tmp_path: Path) -> None:
    """Four processes register one run id at the same moment: exactly one wins."""
    code = ("import sys; from coral.config import load_config; from coral.home import Home; "
            "from coral.run.registry import register_run; from coral.errors import CoralError\n"
            "cfg = load_config(sys.argv[1]); import time; time.sleep(max(0, float(sys.argv[2]) - time.time()))\n"
            "try:\n  register_run(Home(), 'same', cfg, {'train': [], 'eval': []}); print('won')\n"
            "except CoralError as exc:\n  print('lost:', exc)")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MODAL_")},
           "CORAL_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    import time

    start = str(time.time() + 2)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(SMOKE), start], env=env, stdout=subprocess.PIPE,
                              text=True) for _ in range(4)]
    lines = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(line.split(":")[0] for line in lines) == ["lost"] * 3 + ["won"], lines


@pytest.mark.parametrize("run_id", ["", "run\n"])
def test_a_bad_run_id_is_refused_not_replaced(tmp_path: Path, run_id: str) -> None:
    """Point 8: `--run-id ''` was silently replaced by a generated id; "run\\n" passed the check."""
    done = coral(tmp_path / "home", "run", str(SMOKE), "--run-id", run_id, "--handlers", FAKES,
                 "--backend", "serial")
    one_line(done, "invalid run id")
    assert not (tmp_path / "home" / "runs").is_dir() or not any((tmp_path / "home" / "runs").iterdir())


@pytest.fixture(scope="module")
def finished_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("finished") / "home"
    done = coral(home, "run", str(SMOKE), "--run-id", "done", "--handlers", FAKES, "--backend", "serial")
    assert done.returncode == 0, done.stderr[-2000:]
    return home


@pytest.fixture
def finished(finished_once: Path, tmp_path: Path) -> Path:
    """A home of its own with one finished run "done" (serial backend, stand-in job bodies)."""
    shutil.copytree(finished_once, tmp_path / "home")
    return tmp_path / "home"


def test_binary_bytes_in_an_event_segment_are_one_line(finished: Path) -> None:
    """Point 5: `coral status` died with a UnicodeDecodeError traceback."""
    segment = sorted((finished / "runs" / "done" / "events").glob("*.jsonl"))[0]
    lines = segment.read_bytes().splitlines(keepends=True)
    segment.write_bytes(b"".join(lines[:3]) + b"\xff\xfe\x00garbage\n" + b"".join(lines[4:]))
    one_line(coral(finished, "status", "done"), f"{segment}:4: corrupt event (not UTF-8 text)")


def test_a_deeply_nested_event_line_is_one_line(finished: Path) -> None:
    """Issue 29 item 8: a line nested 200k deep gave `coral status` a RecursionError traceback."""
    segment = sorted((finished / "runs" / "done" / "events").glob("*.jsonl"))[0]
    lines = segment.read_bytes().splitlines(keepends=True)
    deep = b'{"seq": 3, "data": ' + b"[" * 200_000 + b"]" * 200_000 + b"}\n"
    segment.write_bytes(b"".join(lines[:3]) + deep + b"".join(lines[4:]))
    one_line(coral(finished, "status", "done"), f"{segment}:4: corrupt event (Event message is nested too deeply)")


def test_a_checkpoint_that_is_a_json_list_is_one_line(finished: Path) -> None:
    """Point 5: resume died with AttributeError ('list' object has no attribute 'get')."""
    point = sorted((finished / "runs" / "done" / "checkpoints").glob("gen-*.json"))[-1]
    point.write_text("[]\n")
    status = finished / "runs" / "done" / "status.json"
    status.write_text(status.read_text().replace('"finished"', '"stopped"'))  # resumable again
    one_line(coral(finished, "resume", "done"), f"{point}: not a checkpoint (a JSON list, expected an object)")


def test_bad_flags_and_a_missing_model_are_one_line_and_register_nothing(tmp_path: Path) -> None:
    """Points 5 and 8: `--workers -3` was a pydantic ValidationError traceback; a wrong
    model.name registered the run and failed three attempts later, in a worker."""
    home = tmp_path / "home"
    one_line(coral(home, "run", str(SMOKE), "--workers", "-3", "--handlers", FAKES),
             "--workers -3: a run needs at least one worker")
    one_line(coral(home, "run", str(SMOKE), "--run-id", "nomodel", "--handlers", FAKES,
                   "--set", "model.name=./no-such-model"),
             f"model folder not found: {REPO / 'configs' / 'no-such-model'} "
             "(model.name takes a hub id or a local folder)")
    assert not (home / "runs" / "nomodel").exists()


# ---------------------------------------------------------------------- a damaged event log


def _segment(home: Path) -> Path:
    return sorted((home / "runs" / "done" / "events").glob("*.jsonl"))[0]


def _resumable(home: Path) -> None:
    status = home / "runs" / "done" / "status.json"
    status.write_text(status.read_text().replace('"finished"', '"stopped"'))


def _edit_lines(home: Path, edit: Any) -> bytes:
    segment = _segment(home)
    lines = segment.read_bytes().splitlines(keepends=True)
    segment.write_bytes(b"".join(edit(lines)))
    return segment.read_bytes()


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda ls: ls[:5] + ls[6:], ":6: event seq 6 where 5 was expected (an event is missing"),
    (lambda ls: ls[:5] + [ls[4]] + ls[5:], ":6: event seq 4 where 5 was expected (an event is repeated"),
    (lambda ls: [ls[0].replace(b'"run_id":"done"', b'"run_id":"other"')] + ls[1:],
     ":1: event 'done:00000000' of run 'other' in the log of run 'done'"),
])
def test_a_log_that_lost_repeated_or_borrowed_an_event_is_named_not_counted(finished: Path, edit: Any,
                                                                           needle: str) -> None:
    """`coral status` counted a log with a missing, a repeated or another run's event as if whole,
    and `coral resume` went on appending to it (a hole in the source of truth for good); the
    ingestor stored the events before a gap and held the rest back without a word."""
    before = _edit_lines(finished, edit)
    segment = _segment(finished)
    one_line(coral(finished, "status", "done"), f"{segment}{needle}")
    _resumable(finished)
    one_line(coral(finished, "resume", "done"), f"{segment}{needle}")
    assert segment.read_bytes() == before  # nothing cut or appended
    if "run 'other'" not in needle:  # (the ingestor names another run's event in its own words)
        done = coral(finished, "ingest", "--transport", "none")
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
        line = needle.split(": ", 1)[1].split(" (")[0]
        assert f"coral: warning: run done cannot be ingested (the others are): {segment}: line 6: {line}" \
            in done.stderr, done.stderr


def test_resume_of_a_log_with_a_corrupt_line_is_one_line_and_changes_nothing(finished: Path) -> None:
    """The engine's event log failed to open (a CoralError), and the failure path then appended
    run_failed to that log: AttributeError ('EvolutionEngine' object has no attribute 'events'),
    a 37-line traceback."""
    before = _edit_lines(finished, lambda ls: ls[:10] + [b'{"seq": 10, garbage\n'] + ls[11:])
    _resumable(finished)
    done = coral(finished, "resume", "done")
    one_line(done, f"{_segment(finished)}:11: corrupt event (Event message is not valid JSON")
    assert _segment(finished).read_bytes() == before
    status = json.loads((finished / "runs" / "done" / "status.json").read_text())
    assert status["state"] == "failed" and ":11: corrupt event" in status["error"]


def test_resume_of_a_log_that_lost_its_events_is_refused(finished: Path) -> None:
    """An emptied log (a lost disk write, a bad copy) was resumed from the checkpoint's next
    event: the log then began at event 90, with everything before it gone for good."""
    _segment(finished).write_bytes(b"")
    _resumable(finished)
    one_line(coral(finished, "resume", "done"), "/events: the log holds no event but its run's checkpoint goes on "
             "from event", "are lost, so the run cannot be resumed from this log")
    assert _segment(finished).read_bytes() == b""


def test_an_event_of_a_newer_schema_is_refused_by_the_ingestor_too(finished: Path) -> None:
    """`coral status` refused an event with schema_version 2; the ingestor stored it as if it
    were version 1."""
    _edit_lines(finished, lambda ls: ls[:-1] + [ls[-1].replace(b'"schema_version":1', b'"schema_version":2')])
    segment = _segment(finished)
    count = len(segment.read_bytes().splitlines())
    one_line(coral(finished, "status", "done"), f"{segment}:{count}: corrupt event (Event message has schema_version 2")
    done = coral(finished, "ingest", "--transport", "none")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"{segment}: line {count}: event has schema_version 2; this CORAL reads 1" in done.stderr, done.stderr


def test_a_notebook_asking_for_an_unreadable_run_is_told_why(finished: Path) -> None:
    """coral.analysis said "no run 'done' in the store (not ingested yet, or a wrong id)" for a
    run whose folder is there and whose log the ingestor could not read."""
    _edit_lines(finished, lambda ls: ls[:10] + [b'{"seq": 10, garbage\n'] + ls[11:])
    for path in finished.glob("queue.sqlite*"):  # no live copy of the events to fall back on
        path.unlink()
    code = ("import sys\nfrom coral import analysis\nfrom coral.errors import CoralError\ntry:\n"
            "    analysis.load_run('done')\nexcept CoralError as exc:\n    print(exc)\n    sys.exit(3)\n")
    full = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    full.update({"CORAL_HOME": str(finished), "PYTHONPATH": str(REPO)})
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=full, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 3, done.stderr[-2000:]
    assert done.stdout.startswith(f"run 'done' cannot be read into the store: {_segment(finished)}: corrupt event "
                                  "line 11"), done.stdout


# ---------------------------------------------------------------------- run files


def test_a_checkpoint_with_an_integer_past_the_digit_limit_is_one_line(finished: Path) -> None:
    """json.loads raises a plain ValueError past 4,300 digits: `coral resume` was a traceback."""
    point = sorted((finished / "runs" / "done" / "checkpoints").glob("gen-*.json"))[-1]
    point.write_text('{"schema": 1' + "0" * 5000 + "}\n")
    _resumable(finished)
    one_line(coral(finished, "resume", "done"),
             f"{point}: unreadable checkpoint (an integer has more than 4300 digits)")


@pytest.mark.parametrize(("text", "needle"), [
    ('{"state": "runn', "unreadable run status (line 1: Unterminated string"),
    ('{"state": 1' + "0" * 5000 + "}", "unreadable run status (an integer has more than 4300 digits)"),
    ("[1, 2]", "not a run status (a JSON list, expected an object)"),
])
def test_a_damaged_status_file_is_named_and_resume_refuses_it(finished: Path, text: str, needle: str) -> None:
    """A status.json that did not parse was read as no status: `coral status` showed state
    'unknown' and `coral resume` went ahead (beside a live orchestrator, had there been one);
    one with a huge integer was a ValueError traceback in `coral status` and `coral runs`."""
    status = finished / "runs" / "done" / "status.json"
    status.write_text(text)
    log = _segment(finished).read_bytes()
    one_line(coral(finished, "status", "done"), f"{status}: {needle}")
    one_line(coral(finished, "resume", "done"), f"{status}: {needle}")
    assert _segment(finished).read_bytes() == log  # nothing ran
    listing = coral(finished, "runs")  # a listing shows what it can, without a traceback
    assert listing.returncode == 0 and "done" in listing.stdout, listing.stderr[-2000:]


def test_a_run_record_that_is_not_text_is_one_line(finished: Path) -> None:
    record = finished / "runs" / "done" / "config.yaml"
    record.write_bytes(b"\x8f\xff" * 100)
    one_line(coral(finished, "status", "done"), f"{record}: unreadable run record (not UTF-8 text)")
    _resumable(finished)
    one_line(coral(finished, "resume", "done"), f"{record}: unreadable run record (not UTF-8 text)")
