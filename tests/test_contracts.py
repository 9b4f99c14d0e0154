"""CORAL_HOME, run ids, content hashes, random streams and JSON messages."""

import pickle
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from coral.errors import CoralError, MessageError
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


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        # json.loads raises a plain ValueError past Python's 4,300-digit limit (was a traceback)
        ('{"job_id": "j", "run_id": "r", "kind": "echo", "attempt": 1' + "0" * 5000 + "}",
         "an integer has more than"),
        ('{"job_id": "j", "run_id": "r", "kind": "echo", "payload": {"x": NaN}}', "NaN is not a JSON value"),
        ('{"job_id": "j", "run_id": "r", "kind": "echo", "payload": {"x": -Infinity}}', "-Infinity"),
        # an escaped lone surrogate parses, but no log or queue can hold it (UTF-8 cannot)
        ('{"job_id": "j", "run_id": "r", "kind": "echo", "payload": {"s": ["\\udc80"]}}', "surrogate \\udc80"),
        ('{"job_id": "j", "run_id": "r", "kind": "echo", "payload": {"\\ud800": 1}}', "surrogate \\ud800"),
        # a key twice: Python keeps the last silently, another reader may keep the first
        ('{"job_id": "j", "run_id": "r", "kind": "echo", "job_id": "k"}', "key 'job_id' appears twice"),
        ('{"job_id": "j", "run_id": "r", "kind": "echo", "payload": {"a": 1, "a": 2}}', "key 'a' appears twice"),
        ('{"schema_version": true, "job_id": "j", "run_id": "r", "kind": "echo"}', "schema_version True"),
        ('{"schema_version": 1.0, "job_id": "j", "run_id": "r", "kind": "echo"}', "schema_version 1.0"),
        # a run id names a results partition and a folder: checked on arrival
        ('{"job_id": "j", "run_id": "../evil", "kind": "echo"}', "run_id: not a run id"),
        ('{"job_id": "j", "run_id": "", "kind": "echo"}', "run_id: not a run id"),
        ('{"job_id": "j", "run_id": "' + "r" * 65 + '", "kind": "echo"}', "run_id: not a run id"),
    ],
)
def test_hostile_messages_raise_one_bounded_line(raw: str, needle: str) -> None:
    for model in (Job, JobResult, Event):
        with pytest.raises(MessageError) as err:
            decode(model, raw)
        text = str(err.value)
        assert "\n" not in text and len(text) < 400
        if model is Job:
            assert needle in text


def test_a_pair_of_surrogates_is_one_character_and_reads() -> None:
    job = decode(Job, '{"job_id": "j", "run_id": "r", "kind": "echo", '
                      '"payload": {"s": "\\ud83d\\ude00", "t": "\\\\ud800"}}')
    assert job.payload == {"s": "\U0001f600", "t": "\\ud800"}
    assert decode(Job, encode(job)) == job


def test_a_megabyte_job_id_is_quoted_bounded() -> None:
    with pytest.raises(MessageError,
                       match=r"\(100000 characters\), kind 'echo'\): job_id: String should have at most 200") as err:
        decode(Job, '{"job_id": "' + "x" * 100_000 + '", "run_id": "r", "kind": "echo"}')
    assert len(str(err.value)) < 300


def test_pickle_is_never_accepted() -> None:
    job = Job(job_id="j", run_id="r", kind="test")
    with pytest.raises(MessageError):
        decode(Job, pickle.dumps(job))


def test_a_bad_envelope_names_its_job() -> None:
    with pytest.raises(MessageError, match=r"^Job message \(job 'j9', kind 'test'\): extra: Extra inputs"):
        decode(Job, '{"job_id": "j9", "run_id": "r", "kind": "test", "extra": 1}')
    with pytest.raises(MessageError, match=r"^JobResult message \(job 'j9', kind 'train'\): ok: Field required"):
        decode(JobResult, '{"job_id": "j9", "run_id": "r", "kind": "train", "attempt": 0}')


def _train_payload() -> dict:
    from coral.config import ModelConfig, TrainingConfig

    return {"model": ModelConfig().model_dump(mode="json"), "threads": 2,
            "training": TrainingConfig().model_dump(mode="json"),
            "genes": {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj"], "adapter_type": "lora"},
            "benchmark_root": "/b", "train_problems": ["gcd"], "prompt_style": "base"}


def test_payloads_and_outputs_are_typed_per_kind() -> None:
    """The engine submits a model, a body reads the same model back, through one JSON message."""
    from coral.execution.payloads import TrainOutput, TrainPayload, job_for, output_of, payload_of

    payload = TrainPayload.model_validate(_train_payload())
    job = decode(Job, encode(job_for(payload, job_id="g0000:train:k", run_id="r", subject="k")))
    assert (job.kind, job.subject) == ("train", "k")
    read = payload_of(job, TrainPayload)
    assert read == payload and read.genes.target_modules == ("q_proj",)
    with pytest.raises(ValidationError, match="frozen"):
        read.genes = payload.genes  # type: ignore[misc]
    result = JobResult(job_id=job.job_id, run_id="r", kind="train", attempt=0, ok=True,
                       output={"cache_key": "abc", "cache_hit": True})
    assert output_of(decode(JobResult, encode(result)), TrainOutput).cache_key == "abc"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"genes": {"rank": 0}}, "train job j: payload field 'genes.rank': Input should be greater than or equal to 1"),
        ({"prompt_style": "chatty"}, "train job j: payload field 'prompt_style': Input should be 'base' or 'instruct'"),
        ({"train_problems": "gcd"}, "train job j: payload field 'train_problems': Input should be a valid list"),
        ({"surprise": 1}, "train job j: payload field 'surprise': Extra inputs are not permitted"),
    ],
)
def test_a_payload_that_does_not_fit_names_job_kind_and_field(change: dict, needle: str) -> None:
    from coral.execution.payloads import TrainPayload, payload_of

    payload = _train_payload()
    for key, value in change.items():
        payload[key] = {**payload[key], **value} if isinstance(payload.get(key), dict) else value
    with pytest.raises(MessageError) as err:
        payload_of(Job(job_id="j", run_id="r", kind="train", payload=payload), TrainPayload)
    assert str(err.value).startswith(needle) and "\n" not in str(err.value)


def test_outputs_are_checked_against_the_kind_and_the_objective_set() -> None:
    from coral.evolution.selection import CANDIDATE_OBJECTIVES as OBJECTIVES
    from coral.execution.payloads import GenerateOutput, TestOutput, TrainOutput, output_json, output_of

    def result(kind: str, output: dict, ok: bool = True) -> JobResult:
        return JobResult(job_id="t1", run_id="r", kind=kind, attempt=0, ok=ok, output=output)

    good = {"candidate": "x", "cases": [{"case": "0", "passed": True, "reason": None, "cost": 3}],
            "objectives": dict.fromkeys(OBJECTIVES, 1.0), "passed_all": True}
    assert output_of(result("test", good), TestOutput).cases[0].cost == 3
    known = ", ".join(OBJECTIVES)
    for objectives, needle in ((dict.fromkeys(OBJECTIVES[1:], 1.0), f"lacks objective '{OBJECTIVES[0]}'"),
                               ({**dict.fromkeys(OBJECTIVES, 1.0), "speed": 1.0},
                                f"unknown objective 'speed' (known: {known})"),
                               ({**dict.fromkeys(OBJECTIVES, 1.0), "style": 1.5},
                                "objective 'style' is 1.5, outside [0, 1]")):
        with pytest.raises(MessageError, match=rf"^test job t1: output field 'objectives': {re.escape(needle)}$"):
            output_of(result("test", {**good, "objectives": objectives}), TestOutput)
    # fix_chance is the model's, from the generate job: a test job cannot claim it
    with pytest.raises(MessageError, match="unknown objective 'fix_chance'"):
        output_of(result("test", {**good, "objectives": {**good["objectives"], "fix_chance": 1.0}}), TestOutput)
    with pytest.raises(MessageError, match=r"^generate job t1: output field 'fix_chances.0': .*less than or equal"):
        output_of(result("generate", {"texts": [["a"]], "fix_chances": [1.5]}), GenerateOutput)
    with pytest.raises(MessageError, match="^generate job t1: output field 'texts': Field required"):
        output_of(result("generate", {"text": []}), GenerateOutput)
    with pytest.raises(MessageError, match="^test job t1: failed, it has no output"):
        output_of(result("test", {}, ok=False), TestOutput)
    with pytest.raises(MessageError, match="TrainOutput is not the output of that kind"):
        output_of(result("test", good), TrainOutput)
    # a body that returns another kind's model fails its job with one line
    with pytest.raises(MessageError, match="^test job t1: the handler returned TrainOutput, not TestOutput"):
        output_json("test", "t1", TrainOutput(cache_key="k", cache_hit=False))
    assert output_json("train", "t1", TrainOutput(cache_key="k", cache_hit=False))["cache_key"] == "k"


def test_checkpoint_trained_keys_are_pairs_and_bad_fields_are_named(tmp_path: Path) -> None:
    import json

    from coral.run import checkpoints as ckpt

    point = ckpt.Checkpoint(generation=0, population=[], scores={}, next_population=[], evolution={},
                            next_seq=4, trained_keys=[("gene-a", "cache-a"), ("gene-b", "cache-b")])
    path = ckpt.save(tmp_path, point)
    on_disk = json.loads(path.read_text())
    assert on_disk["trained_keys"] == [["gene-a", "cache-a"], ["gene-b", "cache-b"]] and on_disk["schema"] == 1
    back = ckpt.load(path)
    assert back == point and dict(back.trained_keys) == {"gene-a": "cache-a", "gene-b": "cache-b"}
    for change, needle in (({"trained_keys": [["only-one"]]}, "checkpoint field 'trained_keys.0.1': Field required"),
                           ({"next_seq": "7"}, "checkpoint field 'next_seq': Input should be a valid integer"),
                           ({"generation": True}, "checkpoint field 'generation': Input should be a valid integer"),
                           ({"population": [{"genes": {}}]}, "checkpoint field 'population.0.seed'"),
                           # written before fix_chance existed: its survivors cannot be ranked on it
                           ({"scores": {"g": dict.fromkeys(("bugfix", "style", "security", "runtime", "syntax"), 0.5)}},
                            "checkpoint holds no 'fix_chance' objective .* start a new one")):
        path.write_text(json.dumps({**on_disk, **change}))
        with pytest.raises(CoralError, match=f"^{path}: {needle}"):
            ckpt.load(path)


def test_a_baseline_as_older_runs_recorded_it_reads_and_writes_unchanged(tmp_path: Path) -> None:
    """Runs made before noise control kept only objectives and problems in their checkpoints."""
    import json

    from coral.run import checkpoints as ckpt

    old = {"objectives": {"bugfix": 0.25, "fitness": 0.2}, "problems": {"gcd": False}}
    point = ckpt.Checkpoint.from_json({"schema": 1, "generation": 0, "population": [], "scores": {},
                                       "next_population": [], "evolution": {}, "next_seq": 3,
                                       "trained_keys": [], "baseline": old})
    assert point.baseline is not None and point.baseline.echo is None and point.baseline.samples is None
    assert json.loads(ckpt.save(tmp_path, point).read_text())["baseline"] == old
    with pytest.raises(CoralError, match=r"checkpoint field 'baseline.problems.gcd': Input should be a valid boolean"):
        ckpt.Checkpoint.from_json({**point.to_json(), "baseline": {**old, "problems": {"gcd": "maybe"}}})
