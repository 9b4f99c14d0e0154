"""The real train / generate / test bodies, in-process, on a tiny random model built on the spot."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

import coral.execution.job_bodies as bodies
from coral.benchmark.prompts import build_prompt, build_target
from coral.config import GenerationConfig, ModelConfig, SandboxConfig, TrainingConfig
from coral.errors import AdapterError, MessageError
from coral.execution.jobs import BUILTIN_HANDLERS, Handlers, WorkerContext
from coral.execution.messages import Job
from coral.execution.payloads import ExtractionInfo
from coral.execution.transport.local import LocalTransport
from coral.home import Home
from tests.model_fixtures import build_tiny_model

MINI = Path(__file__).resolve().parents[1] / "fixtures" / "mini_bench"
GENES = {"rank": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"],
         "adapter_type": "lora"}
KNOBS = {"temperature": 0.8, "top_p": 0.95, "top_k": 20, "repetition_penalty": 1.0,
         "max_new_tokens": 12}


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("bodies")
    model = ModelConfig(name=str(build_tiny_model(root / "model")), device="cpu")
    home = Home(root / "home").ensure()
    transport = LocalTransport(home.queue_db)
    ctx = WorkerContext(transport, worker_id="test", home=home, claim_seconds=30)
    yield model, home, ctx
    transport.close()


def _job(kind: str, payload: dict, job_id: str = "j") -> Job:
    return Job(job_id=job_id, run_id="r", kind=kind, payload=payload)


def test_bodies_are_registered() -> None:
    handlers = Handlers()
    for kind in ("train", "generate", "test"):
        assert BUILTIN_HANDLERS[kind] == f"coral.execution.job_bodies:{kind}"
        assert handlers.get(kind) is getattr(bodies, kind)


def test_train_then_generate(setting) -> None:
    model, home, ctx = setting
    payload = {"model": model.model_dump(mode="json"), "threads": 1,
               "training": TrainingConfig(steps=2, batch_size=2, max_length=128).model_dump(mode="json"),
               "genes": GENES, "benchmark_root": str(MINI), "train_problems": ["count_bits", "evens"],
               "prompt_style": "base"}
    first = bodies.train(_job("train", payload), ctx)
    again = bodies.train(_job("train", payload), ctx)
    assert first.cache_hit is False and again.cache_hit is True
    assert first.cache_key == again.cache_key
    assert (home.adapter_dir(first.cache_key) / "adapter_model.safetensors").is_file()

    prompts = [build_prompt("gcd", "def gcd(a, b):\n    return a\n")] * 2
    gen = {"model": model.model_dump(mode="json"), "threads": 1, "prompts": prompts, "samples": 3,
           "generation": GenerationConfig().model_dump(mode="json"), "knobs": KNOBS, "seed": 7,
           "cache_key": first.cache_key, "greedy": False}
    out = bodies.generate(_job("generate", gen), ctx)
    assert [len(row) for row in out.texts] == [3, 3]
    assert bodies.generate(_job("generate", gen), ctx).texts == out.texts  # seeded
    # With reference answers, the job also computes each prompt's fix_chance: no draw involved,
    # so another seed gives the same numbers; an answer past max_new_tokens has no chance.
    assert out.fix_chances is None
    ref = "@@ 2\n    return b\n```\n"
    asked = {**gen, "answers": [ref, ref], "fix_chance_k": 5,
             "knobs": {**KNOBS, "top_k": 100_000, "top_p": 1.0, "max_new_tokens": 64}}  # nothing cut
    chances = bodies.generate(_job("generate", asked), ctx).fix_chances
    assert chances is not None and len(chances) == 2 and chances[0] == chances[1] and 0 < chances[0] < 1
    assert bodies.generate(_job("generate", {**asked, "seed": 8}), ctx).fix_chances == chances
    assert bodies.generate(_job("generate", {**asked, "knobs": {**KNOBS, "top_k": 1}}), ctx).fix_chances == [0.0, 0.0]
    base = bodies.generate(_job("generate", {**gen, "cache_key": None, "greedy": True}), ctx)
    assert len(base.texts) == 2
    # The same adapter filed under another key (copied, renamed) is not that key's adapter.
    misfiled = home.adapter_dir("0" * 24)
    shutil.copytree(home.adapter_dir(first.cache_key), misfiled)
    with pytest.raises(AdapterError, match=f"holds adapter '{first.cache_key}', not '{'0' * 24}'"):
        bodies.generate(_job("generate", {**gen, "cache_key": "0" * 24}), ctx)
    shutil.rmtree(misfiled)


def test_test_body_scores_fix_and_bug(setting) -> None:
    _, _, ctx = setting
    fixed = (MINI / "correct_python_programs" / "gcd.py").read_text()
    buggy = (MINI / "python_programs" / "gcd.py").read_text()
    payload = {"benchmark_root": str(MINI), "problem": "gcd",
               "sandbox": SandboxConfig().model_dump(mode="json")}
    good = bodies.test(_job("test", {**payload, "raw": fixed.split('"""')[0] + "```\n"}), ctx)
    bad = bodies.test(_job("test", {**payload, "raw": buggy}), ctx)
    assert good.passed_all is True and good.objectives["bugfix"] == 1.0
    assert bad.passed_all is False and bad.objectives["bugfix"] < 1.0
    assert set(good.objectives) == {"bugfix", "syntax", "style", "security", "runtime"}
    assert good.cases and all(c.passed for c in good.cases)


def test_test_body_applies_edits_and_records_bad_ones(setting) -> None:
    _, _, ctx = setting
    fixed = (MINI / "correct_python_programs" / "gcd.py").read_text()
    buggy = (MINI / "python_programs" / "gcd.py").read_text()
    payload = {"benchmark_root": str(MINI), "problem": "gcd",
               "sandbox": SandboxConfig().model_dump(mode="json")}
    edit = bodies.test(_job("test", {**payload, "raw": build_target(buggy, fixed)}), ctx)
    assert edit.passed_all is True and edit.extraction == ExtractionInfo(method="edit", reason="")
    out_of_range = "@@ 999\n    return 0\n```\n"
    bad = bodies.test(_job("test", {**payload, "raw": out_of_range}), ctx)
    assert bad.extraction is not None and bad.extraction.method == "bad_edit"
    assert "past the end" in bad.extraction.reason
    assert bad.passed_all is False and bad.objectives["syntax"] == 0.0
    assert bad.candidate == "@@ 999\n    return 0\n"  # scored as written, not the buggy program


def test_bad_payload_is_one_clear_error(setting) -> None:
    _, _, ctx = setting
    with pytest.raises(MessageError, match="^test job j: payload field 'problem': Field required$"):
        bodies.test(_job("test", {"benchmark_root": str(MINI), "raw": ""}), ctx)
    genes = {**GENES, "rank": 0}
    with pytest.raises(MessageError, match=r"^train job t7: payload field 'genes\.rank': Input should be greater"):
        bodies.train(_job("train", {"model": {"name": "x"}, "training": {}, "genes": genes,
                                    "benchmark_root": str(MINI), "train_problems": [],
                                    "prompt_style": "base"}, job_id="t7"), ctx)
    with pytest.raises(MessageError, match="unknown problem 'nope'"):
        bodies.test(_job("test", {"benchmark_root": str(MINI), "problem": "nope", "raw": ""}), ctx)


@pytest.mark.parametrize("depth", [1500, 20_000])
def test_deeply_nested_answers_are_scored_not_raised(setting, depth: int) -> None:
    """Code nested past Python's recursive `ast` helpers (1,500 deep: it still compiles) or past
    its parser (20,000: it does not) raised RecursionError or MemoryError out of extraction, so
    the test job failed and the run stopped. Each is now a scored candidate."""
    _, _, ctx = setting
    payload = {"benchmark_root": str(MINI), "problem": "gcd",
               "sandbox": SandboxConfig().model_dump(mode="json")}
    shapes = {"sum": "a+" * depth + "b", "invert": "~" * depth + "b", "negate": "not " * depth + "b",
              "call": "a" + "()" * depth}
    for shape, expr in shapes.items():
        raw = f"Fixed:\n```python\ndef gcd(a, b):\n    return {expr}\n```\n"
        out = bodies.test(_job("test", {**payload, "raw": raw}), ctx)
        assert out.passed_all is False and out.objectives["bugfix"] == 0.0, shape
        compiles = depth == 1500
        assert out.objectives["syntax"] == (1.0 if compiles else 0.0), shape
        assert out.extraction is not None
        assert out.extraction.method == ("code" if compiles else "unparsed"), (shape, out.extraction)
        assert f"return {expr}" in out.candidate, shape  # scored as written
        failed = [c for c in out.cases if not c.passed]
        assert failed and all(c.reason for c in failed), shape


def test_lone_surrogates_in_an_answer_or_its_errors_leave_a_job_output_that_can_be_sent(setting) -> None:
    """A lone surrogate (in the answer, or in what the program raised) reached the test job's
    output, whose encoding then raised: the job failed and the run stopped. It becomes '?'."""
    _, _, ctx = setting
    payload = {"benchmark_root": str(MINI), "problem": "gcd", "sandbox": SandboxConfig().model_dump(mode="json")}
    raised = bodies.test(_job("test", {**payload, "raw": "def gcd(a, b):\n    raise ValueError(chr(0xdcff))\n"}), ctx)
    written = bodies.test(_job("test", {**payload, "raw": "def gcd(a, b):\n    return '\udcff'  # \udcff\n"}), ctx)
    assert {c.reason for c in raised.cases} == {"ValueError: ?"}
    assert "\udcff" not in written.candidate and "return '?'" in written.candidate
    for out in (raised, written):
        assert out.passed_all is False and out.objectives["bugfix"] == 0.0
        json.loads(out.model_dump_json())  # raised PydanticSerializationError before


def test_an_answer_past_the_analysed_length_is_scored_without_being_parsed(setting) -> None:
    """A 10 MB answer took 142 s and 3.7 GB to extract, lint and run: past MAX_ANSWER_CHARS an
    answer is an empty candidate with the reason, at once; one character less is analysed."""
    from coral.benchmark.extract import MAX_ANSWER_CHARS

    _, _, ctx = setting
    payload = {"benchmark_root": str(MINI), "problem": "gcd", "sandbox": SandboxConfig().model_dump(mode="json")}
    fix = "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a\n"
    padding = "#" * 70 + "\n"
    fits = fix + padding * ((MAX_ANSWER_CHARS - len(fix)) // len(padding))
    analysed = bodies.test(_job("test", {**payload, "raw": fits}), ctx)
    assert analysed.passed_all and analysed.extraction is not None and analysed.extraction.method == "code"
    started = time.monotonic()
    huge = bodies.test(_job("test", {**payload, "raw": fits + padding * 100_000}), ctx)
    assert time.monotonic() - started < 30
    assert huge.extraction is not None and huge.extraction.method == "too_long"
    assert huge.extraction.reason.startswith("answer of 7,")
    assert huge.candidate == "" and huge.passed_all is False and huge.objectives["bugfix"] == 0.0


def test_training_data_program_mutants_trains_on_more_bugs_of_the_train_programs(setting) -> None:
    """training.data: program-mutants: the train job builds its pairs from mutants of the train
    problems' reference programs (never an eval problem), so it trains a different adapter."""
    from coral.benchmark.loader import load_benchmark
    from coral.model.train import adapter_data, training_pairs

    model, home, ctx = setting
    training = TrainingConfig(steps=2, batch_size=2, max_length=256)
    payload = {"model": model.model_dump(mode="json"), "threads": 1, "genes": GENES,
               "benchmark_root": str(MINI), "train_problems": ["count_bits", "evens"], "prompt_style": "base"}
    mutants = training.model_copy(update={"data": "program-mutants"})
    problems = {p.name: p for p in load_benchmark(MINI)}
    train = [problems["count_bits"], problems["evens"]]
    pairs = adapter_data(mutants, MINI, train)
    assert len(pairs) > len(training_pairs(train)) and len(set(pairs)) == len(pairs)
    named = {prompt.split("`")[1] for prompt, _ in pairs}
    assert named == {"count_bits", "evens"}  # a plain benchmark: each problem is its own family
    assert adapter_data(training, MINI, train) == training_pairs(train)
    on_instances = bodies.train(_job("train", {**payload, "training": training.model_dump(mode="json")}), ctx)
    on_mutants = bodies.train(_job("train", {**payload, "training": mutants.model_dump(mode="json")}), ctx)
    assert on_mutants.cache_key != on_instances.cache_key
    meta = json.loads((home.adapter_dir(on_mutants.cache_key) / "coral_adapter.json").read_text())
    assert meta["pairs_used"] + meta["pairs_dropped"] == len(pairs)
