"""The benchmarks under bench/ that tests can reach: gpu_generate --tiny on CPU, tiny_model's adapter data."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from coral.benchmark.mutate import families
from coral.model.train import program_mutant_pairs

BENCH = Path(__file__).resolve().parents[2] / "bench" / "gpu_generate.py"


def _load_bench(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH.parent / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_gpu_generate_runs_tiny_on_cpu(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key in [k for k in os.environ if k.startswith("MODAL_")]:
        monkeypatch.delenv(key)
    bench = _load_bench("gpu_generate")
    threads = torch.get_num_threads()
    try:
        result = bench.main(["--tiny", "--device", "cpu", "--home", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == pytest.approx(result)
    assert result["design_rows"] == 8 and result["design_tokens"] == 8 * 8
    assert result["predecessor_tokens"] == 2 * 2 * 8  # 2 jobs x batch 2 x 8 new tokens
    assert len(list((tmp_path / "adapters").iterdir())) == 2  # warm-up + measured adapter
    for name in ("train_tokens_per_s", "design_tokens_per_s", "predecessor_tokens_per_s", "ratio"):
        assert result[name] > 0


def test_program_mutant_adapter_data_comes_from_train_programs_only() -> None:
    """training.data: program-mutants (and bench/tiny_model.py --adapter-data program-mutants):
    more bugs in the TRAIN side's programs, each answered with line edits, and no eval family."""
    bench = _load_bench("tiny_model")
    train = bench.side(bench.INSTANCES, "train")
    held_out = bench.side(bench.INSTANCES, "eval")
    pairs = program_mutant_pairs(bench.INSTANCES, train, "base")
    family_of = families(bench.INSTANCES)
    train_families = {family_of[p.name] for p in train}
    eval_families = {family_of[p.name] for p in held_out}
    assert len(pairs) > len(train)  # more than one pair per instance, from 29 programs
    named = {prompt.split("`")[1] for prompt, _ in pairs}  # "The Python function `NAME` below ..."
    assert {family_of[n] for n in named} == train_families
    assert not any(f"def {family}" in prompt for prompt, _ in pairs for family in eval_families)
    assert all(target.startswith("@@ ") for _, target in pairs)
    assert len(set(pairs)) == len(pairs)  # distinct bugs, not one instance repeated
    assert pairs == program_mutant_pairs(bench.INSTANCES, train, "base")  # seeded: the same data every time
