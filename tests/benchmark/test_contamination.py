"""Contamination: a model's training manifest against benchmark bodies (CLI, runs, instances)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO

from coral.benchmark.bodies import HASH_VERSION, function_hashes
from coral.benchmark.contamination import MANIFEST_FILE, report
from coral.benchmark.loader import load_benchmark
from coral.cli import main
from coral.config import load_config
from coral.home import Home
from coral.run.events import read_events
from coral.run.lifecycle import resolve_config, run_from_config
from coral.services.backends import run_context

PROBLEMS = REPO / "data" / "problems"
MUTANTS = REPO / "data" / "mutants"
MINI = REPO / "tests" / "fixtures" / "mini_bench"
SMOKE = REPO / "configs" / "smoke.yaml"


def _model(folder: Path, programs: dict[str, str], base: Path | None = None) -> Path:
    """A model folder (a copy of `base`, else empty) with a training manifest of these
    (name -> source) programs."""
    if base is None:
        folder.mkdir(parents=True)
    else:
        shutil.copytree(base, folder)
    entries = [{"name": name, "origin": "test", "hash": function_hashes(src)[name]}
               for name, src in programs.items()]
    entries.append({"name": "helper", "origin": "stdlib", "hash": function_hashes(
        "def helper(x):\n    return x * 2\n")["helper"]})
    (folder / MANIFEST_FILE).write_text(json.dumps({"version": 1, "hash": HASH_VERSION,
                                                   "programs": entries}))
    return folder


def test_report_names_problems_whose_reference_or_buggy_body_was_trained_on(tmp_path: Path) -> None:
    problems = {p.name: p for p in load_benchmark(PROBLEMS)}
    # Reformatted and renamed, the reference of gcd is still gcd; the buggy flatten is matched.
    gcd = problems["gcd"].correct_source.replace("def gcd(", "def my_gcd(").replace("    ", "  ")
    model = _model(tmp_path / "m", {"my_gcd": gcd, "flatten": problems["flatten"].buggy_source})
    found = report(list(problems.values()), model)
    assert found["manifest"] and found["programs"] == 3
    assert found["contaminated"] == ["flatten", "gcd"]
    parts = {d["name"]: d["parts"] for d in found["details"]}
    assert parts == {"flatten": ["buggy"], "gcd": ["reference"]}
    # Every instance of the gcd family shares its reference body: all are contaminated.
    instances = load_benchmark(MUTANTS)
    hit = report(instances, model)["contaminated"]
    assert {n for n in hit if n.startswith("gcd_")} == {p.name for p in instances if p.name.startswith("gcd_")}
    assert report(list(problems.values()), tmp_path)["contaminated"] is None  # no manifest


def test_check_with_model_on_a_quixbugs_clone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clone = tmp_path / "clone"
    shutil.copytree(MINI, clone, ignore=shutil.ignore_patterns("__pycache__"))
    (clone / "split.json").unlink()
    mean = next(p for p in load_benchmark(clone) if p.name == "mean")
    model = _model(tmp_path / "m", {"mean": mean.correct_source})
    assert main(["bench", "check", str(clone), "--json", "--model", str(model)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["contaminated"] == ["mean"] and len(data["problems"]) == 6
    assert main(["bench", "check", str(clone), "--model", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("contamination: unknown")
    (model / MANIFEST_FILE).write_text("{not json")
    assert main(["bench", "check", str(clone), "--model", str(model)]) == 2
    err = capsys.readouterr().err.strip()  # progress lines, then the one error line
    assert "Traceback" not in err and "invalid JSON" in err.splitlines()[-1]


def test_a_run_records_contaminated_eval_problems(tmp_path: Path) -> None:
    problems = {p.name: p for p in load_benchmark(PROBLEMS)}
    model = _model(tmp_path / "m", {"gcd": problems["gcd"].correct_source,
                                    "bitcount": problems["bitcount"].correct_source},
                   base=REPO / "data" / "models" / "tiny-code")
    config = load_config(SMOKE, [f"model.name={model}"])  # the fakes never load the model
    config = resolve_config(config, backend="serial")
    run_from_config(config, "dirty", run_context(config, handlers="coral.testing.fakes:HANDLERS"))
    events = list(read_events(Home().events_dir("dirty")))
    # gcd is on the eval side of the smoke split, bitcount on the train side.
    assert events[0].data["contaminated"] == ["gcd"]
    assert events[-1].data["summary"]["contaminated"] == ["gcd"]
