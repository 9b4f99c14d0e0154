"""Deterministic stand-in job bodies: the engine's logic without a model or a sandbox.

Loaded in worker processes with `--handlers coral.testing.fakes:HANDLERS`. Outputs are pure
functions of the payload (as the real bodies are of payload + adapter), so any difference
between runs points at the engine. CORAL_FAKE_SLEEP (seconds) slows every job, to kill or stop
a run mid-generation.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from coral.evolution.selection import CANDIDATE_OBJECTIVES
from coral.execution.jobs import WorkerContext
from coral.execution.messages import Job
from coral.execution.payloads import (
    CaseOutcome,
    GenerateOutput,
    GeneratePayload,
    TestOutput,
    TestPayload,
    TrainOutput,
    TrainPayload,
    payload_of,
)
from coral.hashing import content_hash


def _nap() -> None:
    # No call at all without a sleep: time.sleep(0) still yields the CPU, ~0.7 ms a job on a
    # loaded machine, which was half a stand-in worker's time (bench/scale.py measures orchestration).
    seconds = float(os.environ.get("CORAL_FAKE_SLEEP", "0"))
    if seconds > 0:
        time.sleep(seconds)


def _unit(*parts: Any) -> float:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


def fake_train(job: Job, ctx: WorkerContext) -> TrainOutput:
    _nap()
    return TrainOutput(cache_key="fake-" + content_hash(payload_of(job, TrainPayload).genes), cache_hit=False)


def fake_generate(job: Job, ctx: WorkerContext) -> GenerateOutput:
    _nap()
    p = payload_of(job, GeneratePayload)
    # A model's chance of the reference fix depends on the adapter, knobs and prompt, never the seed.
    chances = None if p.answers is None else [round(_unit(p.cache_key, p.knobs.temperature, a), 6) for a in p.answers]
    return GenerateOutput(texts=[[f"{p.cache_key}|{p.seed}|{i}|{s}|{p.knobs.temperature}"
                                  for s in range(p.samples)] for i in range(len(p.prompts))],
                          fix_chances=chances)


def fake_check(job: Job, ctx: WorkerContext) -> TestOutput:
    _nap()
    payload = payload_of(job, TestPayload)
    raw = payload.raw
    # The meter as the real body reports it: the forced fallback, else the task clock (what this
    # stand-in claims for "auto"). As for real, a cost on another meter scores differently.
    meter = "cpu-time" if payload.sandbox.meter == "cpu-time" else "task-clock"
    passed = _unit(raw, "pass") < 0.4
    objectives = {n: round(_unit(raw, n), 6) if passed else 0.0 for n in CANDIDATE_OBJECTIVES if n != "syntax"}
    objectives["syntax"] = round(_unit(raw, "syntax"), 6)
    if passed:
        objectives["bugfix"] = 1.0
        if meter != "task-clock":
            objectives["runtime"] = round(_unit(raw, "runtime", meter), 6)
    return TestOutput(candidate=raw, cases=[CaseOutcome(case=0, passed=passed, reason=None, cost=1)],
                      objectives=objectives, passed_all=passed, meter=meter)


HANDLERS = {"train": fake_train, "generate": fake_generate, "test": fake_check}


# A run whose training fails with model-like text in its error (Markdown, HTML, an ANSI escape):
# the pages must show it as text (tests/pages/test_browser_dashboard.py).
MARKDOWN_ERROR = ("bad ![x](http://example.com/x.png) [click](javascript:alert(1)) <b>bold</b> "
                  "**big** $x^2$ \x1b[31m")


def failing_train(job: Job, ctx: WorkerContext) -> TrainOutput:
    raise RuntimeError(MARKDOWN_ERROR)


FAILS_WITH_MARKDOWN = {**HANDLERS, "train": failing_train}


# Generated code with a right-to-left override, an ANSI escape and a NUL (what a model can write):
# the genome page shows them as escapes (tests/pages/test_browser_dashboard.py).
SPOOFING_CODE = "access = 'user\u202e \u2066// admin\u2069 \u2066'\x1b[8m\x00\n"


def spoofing_generate(job: Job, ctx: WorkerContext) -> GenerateOutput:
    out = fake_generate(job, ctx)
    return GenerateOutput(texts=[[SPOOFING_CODE + text for text in texts] for texts in out.texts],
                          fix_chances=out.fix_chances)


WRITES_SPOOFING_CODE = {**HANDLERS, "generate": spoofing_generate}
