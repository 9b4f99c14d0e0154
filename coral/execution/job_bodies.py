"""The three job bodies of a run: train (or reuse) an adapter, generate candidates, test one.

Each is `body(job, ctx) -> output model` (coral.execution.jobs handler signature) and runs in a
worker process, on Modal, or in-process under SerialExecutor. It reads its payload once, as its
kind's model (coral.execution.payloads), and returns its kind's output model. Payloads carry ids,
names, small settings and texts, never weights; per-process resources (the base model, the loaded
benchmark) come from `ctx.resource`, so they load once per worker. Fields: docs/engine.md.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from coral.benchmark.extract import extract
from coral.benchmark.loader import load_benchmark
from coral.benchmark.problem import Problem
from coral.config import ModelConfig, SandboxConfig
from coral.errors import AdapterError, MessageError
from coral.execution.jobs import WorkerContext
from coral.execution.messages import Job
from coral.execution.payloads import (
    CaseOutcome,
    ExtractionInfo,
    GenerateOutput,
    GeneratePayload,
    TestOutput,
    TestPayload,
    TrainOutput,
    TrainPayload,
    payload_of,
)
from coral.hashing import content_hash
from coral.model.adapters import adapter_cache_key, cached_key, check_cache_key, data_fingerprint, find_adapter
from coral.sandbox.objectives import score_candidate
from coral.sandbox.runner import RunnerLimits, utf8


def _set_threads(threads: int | None) -> None:
    """Thread count travels in the payload: CPU float sums must not depend on who runs a job."""
    if threads is not None:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _base(ctx: WorkerContext, model: ModelConfig) -> Any:
    from coral.model.loading import load_base_model  # torch: a test-only worker never loads it

    return ctx.resource(f"base:{content_hash(model)}", lambda: load_base_model(model))


def _problems(ctx: WorkerContext, root: str) -> dict[str, Problem]:
    return ctx.resource(f"bench:{root}", lambda: {p.name: p for p in load_benchmark(Path(root))})


def train(job: Job, ctx: WorkerContext) -> TrainOutput:
    """Train the adapter for these heavy genes, or reuse it."""
    from coral.model.train import adapter_data, train_adapter  # torch: model workers only

    payload = payload_of(job, TrainPayload)
    _set_threads(payload.threads)
    problems = _problems(ctx, payload.benchmark_root)
    missing = [n for n in payload.train_problems if n not in problems]
    if missing:
        raise MessageError(f"train job {job.job_id}: unknown training problem {missing[0]!r}")
    train = [problems[n] for n in payload.train_problems]
    pairs = ctx.resource(f"pairs:{payload.benchmark_root}:{payload.training.data}:{payload.prompt_style}:"
                         f"{content_hash(payload.train_problems)}",
                         lambda: adapter_data(payload.training, Path(payload.benchmark_root), train,
                                              payload.prompt_style))
    base = _base(ctx, payload.model)
    key = adapter_cache_key(payload.genes, base.fingerprint, data_fingerprint(pairs), payload.training)
    folder = ctx.home.adapter_dir(key)
    started = time.time()
    with ctx.claim(key, is_done=lambda: find_adapter(folder) is not None) as won:
        info = train_adapter(base, payload.genes, pairs, payload.training, ctx.home, key) if won else None
    if info is None:
        info = find_adapter(folder)
        if info is None:
            raise AdapterError(f"adapter {key}: claim finished but {folder} is missing")
    return TrainOutput(cache_key=key, cache_hit=not won or info.cache_hit,
                       final_loss=info.loss_curve[-1] if info.loss_curve else None,
                       train_tokens=info.train_tokens, train_seconds=time.time() - started)


def generate(job: Job, ctx: WorkerContext) -> GenerateOutput:
    """One batched call: every prompt x samples. Output: texts[prompt][sample], and with
    reference answers, each prompt's fix_chance (coral.model.likelihood)."""
    from coral.model.generate import generate_for_genome  # torch: model workers only
    from coral.model.likelihood import fix_chances

    payload = payload_of(job, GeneratePayload)
    _set_threads(payload.threads)
    adapter = ctx.home.adapter_dir(payload.cache_key) if payload.cache_key else None
    if adapter is not None:
        check_cache_key(adapter, cached_key(adapter))  # whole and intact is checked when it loads
    base = _base(ctx, payload.model)
    started = time.time()
    samples = payload.samples
    rows = [p for p in payload.prompts for _ in range(samples)]
    texts = generate_for_genome(base, adapter, rows, payload.knobs, payload.seed, payload.generation,
                                greedy=payload.greedy)
    grouped = [texts[i * samples:(i + 1) * samples] for i in range(len(payload.prompts))]
    chances = None
    if payload.answers is not None:
        chances = fix_chances(base, adapter, payload.prompts, payload.answers, payload.knobs, payload.generation,
                              payload.fix_chance_k, greedy=payload.greedy)
    return GenerateOutput(texts=grouped, generate_seconds=time.time() - started, fix_chances=chances)


def test(job: Job, ctx: WorkerContext) -> TestOutput:
    """Extract the candidate from raw model output, run it in the sandbox, score it."""

    payload = payload_of(job, TestPayload)
    problems = _problems(ctx, payload.benchmark_root)
    name = payload.problem
    if name not in problems:
        raise MessageError(f"test job {job.job_id}: unknown problem {name!r}")
    problem = problems[name]
    started = time.time()
    # Scored as UTF-8 text, as the linters read it: a lone surrogate could not be sent back.
    extraction = extract(utf8(payload.raw), name, problem.buggy_source)
    candidate = extraction.source
    score = score_candidate(problem, candidate, limits=runner_limits(payload.sandbox))
    return TestOutput(
        candidate=candidate,
        extraction=ExtractionInfo(method=extraction.method, reason=extraction.reason),
        cases=[CaseOutcome(case=c.case_id, passed=bool(c.passed), reason=c.reason, cost=c.cost)
               for c in score.cases],
        objectives=score.objectives(),
        passed_all=bool(score.fixed),
        style_violations=list(score.style_violations),
        security_issues=list(score.security_issues),
        error=score.error,
        test_seconds=time.time() - started,
        meter=score.meter,
    )


def runner_limits(sandbox: SandboxConfig) -> RunnerLimits:
    """The config's sandbox section as the runner's limits."""
    return RunnerLimits.from_config(sandbox)
