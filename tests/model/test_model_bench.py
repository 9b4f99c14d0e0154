"""bench/gpu_generate.py --tiny: the GPU benchmark's whole path, on CPU, in seconds."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench" / "gpu_generate.py"


def test_gpu_generate_runs_tiny_on_cpu(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key in [k for k in os.environ if k.startswith("MODAL_")]:
        monkeypatch.delenv(key)
    spec = importlib.util.spec_from_file_location("gpu_generate", BENCH)
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
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
