"""CORAL_HOME, run ids, content hashes, random streams and JSON messages."""

import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from coral.errors import MessageError
from coral.execution.messages import SCHEMA_VERSION, Event, Job, JobResult, decode, encode, event_id
from coral.hashing import canonical_json, content_hash
from coral.home import Home, coral_home, new_run_id
from coral.rng import stream


def test_coral_home_env_and_default(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CORAL_HOME", str(tmp_path / "h"))
    assert coral_home() == (tmp_path / "h").resolve()
    monkeypatch.delenv("CORAL_HOME")
    monkeypatch.chdir(tmp_path)
    assert coral_home() == (tmp_path / ".coral").resolve()
    home = Home(tmp_path / "x").ensure()
    assert home.run_dir("r1").parent == home.runs and home.adapters.is_dir()
    assert home.events_dir("r1") == home.root / "runs" / "r1" / "events"
    assert home.queue_db.name == "queue.sqlite" and home.store_db.name == "store.duckdb"


def test_run_ids_sort_by_time_and_are_unique() -> None:
    t0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    ids = [new_run_id(t0 + timedelta(seconds=s)) for s in (0, 1, 61, 3600)]
    assert ids == sorted(ids)
    assert len({new_run_id(t0) for _ in range(2000)}) == 2000


def test_run_id_rejects_path_tricks() -> None:
    from coral.errors import CoralError

    for bad in ("../x", "a/b", "", "x" * 80):
        with pytest.raises(CoralError):
            Home(Path("/tmp")).run_dir(bad)


def test_content_hash_is_canonical() -> None:
    assert canonical_json({"b": 1, "a": [1.0, "x"]}) == '{"a":[1.0,"x"],"b":1}'
    assert content_hash({"a": 1, "b": 2}) == content_hash({"b": 2, "a": 1})
    assert content_hash({"a": 0.1 + 0.2}) == content_hash({"a": 0.3})
    assert content_hash({"a": 1}) != content_hash({"a": 2})
    # Pinned value: changing the encoding would silently orphan every cached adapter.
    assert content_hash({"rank": 8}) == "fd6fa1f57597df64"


def test_streams_depend_on_every_coordinate() -> None:
    base = stream(1, "p", 2, "g").random(4).tolist()
    assert base == stream(1, "p", 2, "g").random(4).tolist()
    for other in (stream(2, "p", 2, "g"), stream(1, "q", 2, "g"), stream(1, "p", 3, "g"),
                  stream(1, "p", 2, "h")):
        assert other.random(4).tolist() != base


def test_messages_round_trip_as_json() -> None:
    job = Job(job_id="j1", run_id="r", kind="train", payload={"genes": {"rank": 8}})
    text = encode(job)
    assert text.startswith("{") and f'"schema_version":{SCHEMA_VERSION}' in text
    assert decode(Job, text) == job
    res = JobResult(job_id="j1", run_id="r", kind="train", attempt=0, ok=False, error="boom")
    assert decode(JobResult, encode(res)) == res
    ev = Event(event_id=event_id("r", 3), run_id="r", seq=3, type="run_started")
    assert decode(Event, encode(ev)).event_id == "r:00000003"


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"schema_version": 99, "job_id": "j", "run_id": "r", "kind": "train"}', "schema_version 99"),
        ('{"job_id": "j", "run_id": "r", "kind": "bake"}', "kind"),
        ('{"job_id": "j", "run_id": "r", "kind": "test", "extra": 1}', "extra"),
    ],
)
def test_bad_messages_raise_one_line(raw, needle) -> None:
    with pytest.raises(MessageError) as err:
        decode(Job, raw)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_pickle_is_never_accepted() -> None:
    job = Job(job_id="j", run_id="r", kind="test")
    with pytest.raises(MessageError):
        decode(Job, pickle.dumps(job))
