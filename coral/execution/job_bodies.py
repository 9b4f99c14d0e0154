"""The three job bodies of a run: train (or reuse) an adapter, generate candidates, test one.

Each is `body(job, ctx) -> dict` (coral.execution.jobs handler signature) and runs in a worker process,
on Modal, or in-process under SerialExecutor. Payloads carry ids, names, small settings and
texts, never weights; per-process resources (the base model, the loaded benchmark) come from
`ctx.resource`, so they load once per worker. Payload fields are documented in docs/engine.md.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from coral.benchmark.extract import extract
from coral.benchmark.loader import load_benchmark
from coral.config import GenerationConfig, ModelConfig, SandboxConfig, TrainingConfig
from coral.errors import AdapterError, MessageError
from coral.evolution.genome import HeavyGenes, Knobs
from coral.execution.jobs import WorkerContext
from coral.execution.messages import Job
from coral.hashing import content_hash
from coral.model.adapters import adapter_cache_key, data_fingerprint, find_adapter
from coral.sandbox.objectives import score_candidate
from coral.sandbox.runner import RunnerLimits


def _field(job: Job, name: str, kind: type | tuple[type, ...]) -> Any:
    value = job.payload.get(name)
    if not isinstance(value, kind):
        raise MessageError(f"{job.kind} job {job.job_id}: payload field {name!r} is missing or "
                           f"not {getattr(kind, '__name__', kind)}")
    return value


def _set_threads(job: Job) -> None:
    """Thread count travels in the payload: CPU float sums must not depend on who runs a job."""
    threads = job.payload.get("threads")
    if isinstance(threads, int) and threads > 0:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _base(ctx: WorkerContext, model: ModelConfig) -> Any:
    from coral.model.loading import load_base_model  # torch: a test-only worker never loads it

    return ctx.resource(f"base:{content_hash(model)}", lambda: load_base_model(model))


def _problems(ctx: WorkerContext, root: str) -> dict[str, Any]:
    return ctx.resource(f"bench:{root}", lambda: {p.name: p for p in load_benchmark(Path(root))})


def train(job: Job, ctx: WorkerContext) -> dict[str, Any]:
    """Train the adapter for these heavy genes, or reuse it. Output: cache_key, cache_hit."""
    from coral.model.train import train_adapter, training_pairs  # torch: model workers only

    _set_threads(job)
    model = ModelConfig.model_validate(_field(job, "model", dict))
    training = TrainingConfig.model_validate(_field(job, "training", dict))
    genes = HeavyGenes.model_validate(_field(job, "genes", dict))
    problems = _problems(ctx, _field(job, "benchmark_root", str))
    names = _field(job, "train_problems", list)
    missing = [n for n in names if n not in problems]
    if missing:
        raise MessageError(f"train job {job.job_id}: unknown training problem {missing[0]!r}")
    pairs = training_pairs([problems[n] for n in names], _field(job, "prompt_style", str))
    base = _base(ctx, model)
    key = adapter_cache_key(genes, base.fingerprint, data_fingerprint(pairs), training)
    folder = ctx.home.adapter_dir(key)
    started = time.time()
    with ctx.claim(key, is_done=lambda: find_adapter(folder) is not None) as won:
        info = train_adapter(base, genes, pairs, training, ctx.home, key) if won else None
    if info is None:
        info = find_adapter(folder)
        if info is None:
            raise AdapterError(f"adapter {key}: claim finished but {folder} is missing")
    return {
        "cache_key": key,
        # Recorded only: whether *this* job found the adapter ready depends on timing and on
        # earlier runs. The engine counts cache hits itself, deterministically.
        "cache_hit": not won or info.cache_hit,
        "final_loss": info.loss_curve[-1] if info.loss_curve else None,
        "train_tokens": info.train_tokens,
        "train_seconds": time.time() - started,
    }


def generate(job: Job, ctx: WorkerContext) -> dict[str, Any]:
    """One batched call: every prompt x samples. Output: texts[prompt][sample]."""
    from coral.model.generate import generate_for_genome  # torch: model workers only

    _set_threads(job)
    model = ModelConfig.model_validate(_field(job, "model", dict))
    settings = GenerationConfig.model_validate(_field(job, "generation", dict))
    knobs = Knobs.model_validate(_field(job, "knobs", dict))
    prompts = _field(job, "prompts", list)
    samples = _field(job, "samples", int)
    seed = _field(job, "seed", int)
    key = job.payload.get("cache_key")
    if key is not None and not isinstance(key, str):
        raise MessageError(f"generate job {job.job_id}: cache_key must be a string or null")
    adapter = ctx.home.adapter_dir(key) if key else None
    base = _base(ctx, model)
    started = time.time()
    rows = [p for p in prompts for _ in range(samples)]
    texts = generate_for_genome(base, adapter, rows, knobs, seed, settings,
                                greedy=bool(job.payload.get("greedy", False)))
    grouped = [texts[i * samples:(i + 1) * samples] for i in range(len(prompts))]
    return {"texts": grouped, "generate_seconds": time.time() - started}


def test(job: Job, ctx: WorkerContext) -> dict[str, Any]:
    """Extract the candidate from raw model output, run it in the sandbox, score it."""

    problems = _problems(ctx, _field(job, "benchmark_root", str))
    name = _field(job, "problem", str)
    if name not in problems:
        raise MessageError(f"test job {job.job_id}: unknown problem {name!r}")
    problem = problems[name]
    raw = _field(job, "raw", str)
    sandbox = SandboxConfig.model_validate(job.payload.get("sandbox") or {})
    started = time.time()
    extraction = extract(raw, name, problem.buggy_source)
    candidate = extraction.source
    score = score_candidate(problem, candidate, limits=runner_limits(sandbox))
    return {
        "candidate": candidate,
        # How the candidate was found (an applied line edit, whole code, ...) and, for an edit
        # that could not be applied, why: it is scored as written, never as the buggy program.
        "extraction": {"method": extraction.method, "reason": extraction.reason},
        "cases": [_case(c) for c in score.cases],
        "objectives": {n: score_value for n, score_value in (
            ("bugfix", score.bugfix), ("syntax", score.syntax), ("style", score.style),
            ("security", score.security), ("runtime", score.runtime))},
        "passed_all": bool(score.fixed),
        "style_violations": list(score.style_violations),
        "security_issues": list(score.security_issues),
        "error": score.error,
        "test_seconds": time.time() - started,
    }


def runner_limits(sandbox: SandboxConfig) -> RunnerLimits:
    """The config's sandbox section as the runner's limits."""
    return RunnerLimits.from_config(sandbox)


def _case(case: Any) -> dict[str, Any]:
    return {"case": case.case_id, "passed": bool(case.passed), "reason": case.reason,
            "cost": case.cost}
