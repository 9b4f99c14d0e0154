"""`coral bench eval`: one model on a benchmark (bundled problems, a QuixBugs-layout clone), echo."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO, run_coral

from coral.benchmark.loader import load_benchmark
from coral.benchmark.split import load_split
from coral.cli import main
from coral.config import load_config
from coral.run.evaluate import default_knobs, evaluate_echo, mean_se
from coral.sandbox.runner import run_candidate

MINI = REPO / "tests" / "fixtures" / "mini_bench"
SMOKE = REPO / "configs" / "smoke.yaml"


def _check_shape(data: dict, names: list[str], k: int) -> None:
    assert data["k"] == k and data["total"] == len(names)
    assert [p["name"] for p in data["problems"]] == names
    for row in data["problems"]:
        assert type(row["fixed"]) is bool and 0.0 <= row["bugfix"] <= 1.0
        assert row["fixed"] == (row["fixed_samples"] > 0)
        assert row["fixed"] or row["bugfix"] < 1.0
        assert 0.0 <= row["fix_chance"] <= 1.0  # computed by the model, per problem
    assert data["fixed"] == sum(p["fixed"] for p in data["problems"])
    assert data["fix_chance"] == pytest.approx(sum(p["fix_chance"] for p in data["problems"]) / len(names))
    assert data["bugfix"] == pytest.approx(sum(p["bugfix"] for p in data["problems"]) / len(names))


def test_eval_on_the_bundled_problems_prints_a_row_per_problem() -> None:
    root = REPO / "data" / "problems"
    result = run_coral("bench", "eval", str(root), "--samples", "1", "--config", str(SMOKE),
                       timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    names = sorted(load_split(root).eval)
    assert [line.split()[0] for line in lines[1:-2]] == names
    fixed = sum(line.split()[1] == "yes" for line in lines[1:-2])
    assert lines[-2].startswith(f"fixed@1: {fixed}/{len(names)} problems; mean bugfix ")
    # Echo beside the model: it fixes nothing and repairs nothing.
    assert lines[-1].startswith(f"echo (buggy programs unchanged): fixed 0/{len(names)}; mean bugfix 0.000;")
    # Progress on stderr, never on stdout: generation and scoring report as they go.
    progress = [line for line in result.stderr.splitlines() if line.startswith("coral bench eval: ")]
    assert any(f"generated {len(names)}/{len(names)} answers" in line for line in progress), result.stderr
    assert any(f"scored {len(names)}/{len(names)} candidates" in line for line in progress), result.stderr


def test_classes_scores_only_those_bug_classes(capsys: pytest.CaptureFixture[str]) -> None:
    root = REPO / "data" / "mutants"
    manifest = json.loads((root / "mutants.json").read_text())
    wanted = {"slice_bound", "wrong_constant"}
    names = sorted(i["name"] for i in manifest["instances"]
                   if i["bug_class"] in wanted and i["name"] in set(load_split(root).eval))
    assert 0 < len(names) < 10
    assert main(["bench", "eval", str(root), "--classes", "slice_bound, wrong_constant", "--samples", "1",
                 "--config", str(SMOKE), "--json"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    _check_shape(data, names, 1)
    assert data["classes"] == ["slice_bound", "wrong_constant"]
    assert data["echo"]["total"] == len(names) and data["echo"]["bugfix"] == 0.0 and data["echo"]["fixed"] == 0
    assert "coral bench eval: generated" in captured.err


def test_bad_classes_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "eval", str(REPO / "data" / "mutants"), "--classes", "slice_bound,off_by_two"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "off_by_two" in err and "(it has: " in err
    assert main(["bench", "eval", str(MINI), "--classes", "slice_bound"]) == 2  # no bug classes recorded
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "mutants.json" in err


def test_eval_on_a_quixbugs_clone_prints_the_json_shape(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    clone = tmp_path / "quixbugs"
    shutil.copytree(MINI, clone, ignore=shutil.ignore_patterns("__pycache__"))
    (clone / "split.json").unlink()  # a plain clone: the derived split
    train = sorted(load_split(clone).train)
    assert main(["bench", "eval", str(clone), "--split", "train", "--samples", "2",
                 "--config", str(SMOKE), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    _check_shape(data, train, 2)
    assert data["knobs"] == default_knobs(load_config(SMOKE).knobs).model_dump(mode="json")


def test_echo_scores_what_the_buggy_programs_pass() -> None:
    """Echo answers with the buggy program: it fixes nothing and repairs nothing (bugfix 0), and
    the share of cases it passes is the buggy program's own, run directly."""
    root = REPO / "data" / "problems"
    config = load_config(SMOKE)
    data = evaluate_echo(root, config)
    problems = {p.name: p for p in load_benchmark(root)}
    assert data["fixed"] == 0 and data["total"] == len(load_split(root).eval)
    for row in data["problems"]:
        run = run_candidate(problems[row["name"]], problems[row["name"]].buggy_source)
        assert row["passed"] == pytest.approx(run.passed / run.total) and row["bugfix"] == 0.0
        assert row["syntax"] == 1.0


def test_bad_adapter_and_split_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["bench", "eval", str(MINI), "--adapter", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "adapter folder not found" in err
    with pytest.raises(SystemExit):
        main(["bench", "eval", str(MINI), "--split", "test"])


def test_mean_se() -> None:
    assert mean_se([1.0]) == (1.0, 0.0)
    mean, se = mean_se([0.0, 1.0, 0.0, 1.0])
    assert mean == 0.5 and se == pytest.approx((1 / 3) ** 0.5 / 2)
