"""The build recipe on a very short schedule: offline, into a tmp dir, loadable, reproducible."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import REPO, run_coral

from coral.benchmark.bodies import HASH_VERSION, function_hashes
from coral.benchmark.loader import load_benchmark
from coral.model.tiny import MANIFEST_FILE, META_FILE, TinySpec, build_tiny

PROBLEMS = REPO / "data" / "problems"
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FAKE_STDLIB = '''
def clamp(value, low, high):
    if value < low:
        return low
    if value > high:
        return high
    return value

def total(values):
    result = 0
    for v in values:
        result += v
    return result

def window(xs, n):
    out = []
    for i in range(len(xs) - n + 1):
        out.append(xs[i:i + n])
    return out
'''


def test_cli_build_is_offline_and_loads(tmp_path: Path) -> None:
    """The real command on the real stdlib and bundled problems, a few steps only."""
    out = tmp_path / "tiny"
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = run_coral("model", "build-tiny", "--steps", "3", "--out", str(out), "--seed", "5",
                     env=env, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json", META_FILE):  # fmt: skip
        assert (out / name).is_file(), name
    meta = json.loads((out / META_FILE).read_text())
    assert meta["seed"] == 5 and meta["steps"] == 3
    assert len(meta["corpus_fingerprint"]) == 64 and meta["python"]
    assert {"torch", "transformers", "tokenizers"} <= set(meta["libraries"])
    split = json.loads((PROBLEMS / "split.json").read_text())
    assert meta["train_problems"] == sorted(split["train"])
    labels = [label for label, _sha in meta["corpus_files"]]
    assert any(label.startswith("stdlib/") for label in labels)
    for name in split["eval"]:  # evaluation programs are never read into the corpus
        assert not any(label.endswith(f"/{name}.py") for label in labels), name
        assert name in meta["excluded_names"]
    # The manifest lists what was trained on; no eval reference's body is among it.
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    trained = {p["hash"] for p in manifest["programs"]}
    assert {p["name"] for p in manifest["programs"] if p["origin"].startswith("problems/")} == set(split["train"])
    assert len(trained) > 1000 and manifest["hash"] == HASH_VERSION
    for problem in load_benchmark(PROBLEMS):
        hashes = set(function_hashes(problem.correct_source).values())
        assert bool(hashes & trained) == (problem.name in split["train"]), problem.name

    os.environ["HF_HUB_OFFLINE"] = "1"  # set by conftest too; load exactly as workers do
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(out)
    modules = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    assert set(LORA_TARGETS) <= modules
    text = "def f(x):\n    return x + 1\n"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert tokenizer.eos_token_id == model.config.eos_token_id
    assert (out / "model.safetensors").stat().st_size < 15 * 2**20


def test_same_seed_same_weights(tmp_path: Path) -> None:
    stdlib = tmp_path / "stdlib"
    stdlib.mkdir()
    (stdlib / "mod.py").write_text(FAKE_STDLIB)
    spec = TinySpec(vocab_size=300, hidden_size=32, intermediate_size=64, heads=2, batch_tokens=512,
                    tokenizer_texts=100)  # fmt: skip
    digests = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        meta = build_tiny(tmp_path / name, steps=4, seed=seed, problems_root=PROBLEMS,
                          stdlib_root=stdlib, spec=spec, log=lambda _line: None)  # fmt: skip
        digests.append(((tmp_path / name / "model.safetensors").read_bytes(), meta["config_id"]))
    assert digests[0] == digests[1]
    assert digests[0][0] != digests[2][0] and digests[0][1] != digests[2][1]


def test_bad_steps_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from coral.cli import main

    assert main(["model", "build-tiny", "--steps", "0", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "--steps" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("missing", ["problems", "stdlib"])
def test_missing_inputs_are_clear(tmp_path: Path, missing: str) -> None:
    from coral.errors import CoralError

    kwargs = {"problems_root": tmp_path / "nope"} if missing == "problems" else {
        "problems_root": None, "stdlib_root": tmp_path / "nope"}
    with pytest.raises(CoralError, match="nope"):
        build_tiny(tmp_path / "out", steps=1, log=lambda _line: None, **kwargs)


def test_unknown_withheld_class_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from coral.cli import main

    assert main(["model", "build-tiny", "--withhold", "wrong_variable,off_by_two",
                 "--out", str(tmp_path / "x")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "off_by_two" in err and "wrong_variable" not in err.split(":")[1]
    assert not (tmp_path / "x").exists()
    from coral.benchmark.mutate import BUG_CLASSES
    from coral.errors import CoralError

    with pytest.raises(CoralError, match="every bug class"):
        TinySpec(withheld_classes=BUG_CLASSES)
