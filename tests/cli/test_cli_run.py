"""The `coral` run commands through the real CLI: one real smoke run shared by several tests,
plus fast ones on stand-in job bodies (detach, pause/continue, validate, errors)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Every test here runs the real CLI in child processes; several share one real smoke run.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"
TINY = REPO / "data" / "models" / "tiny-code"
FAKES = "coral.testing.fakes:HANDLERS"


def coral(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update({"CORAL_HOME": str(home), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"})
    return subprocess.run([sys.executable, "-m", "coral", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, subprocess.CompletedProcess]:
    """One real `coral run configs/smoke.yaml` (tiny model, real training, sandboxed tests)."""
    root = tmp_path_factory.mktemp("smoke")
    extra: list[str] = []
    if not (TINY / "config.json").is_file():  # the committed model is not there: build one
        from tests.model_fixtures import build_tiny_model

        model = build_tiny_model(root / "model")
        extra = ["--set", f"model.name={model}", "--set", "generation.max_prompt_length=900"]
    done = coral(root / "home", "run", str(SMOKE), *extra, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "home", done.stdout.splitlines()[0], done


def test_smoke_run_finishes(smoke) -> None:
    home, run_id, done = smoke
    assert run_id.count("-") == 1 and "T" in run_id  # the id is the first line
    assert f"run {run_id} finished" in done.stdout
    folder = home / "runs" / run_id
    record = (folder / "config.yaml").read_text()
    assert "split:" in record and "versions:" in record and "eval:" in record
    events = [json.loads(line) for p in sorted((folder / "events").glob("*.jsonl"))
              for line in p.read_text().splitlines()]
    types = [e["type"] for e in events]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.count("generation_finished") == 2 and types.count("baseline_finished") == 1
    jobs = [e for e in events if e["type"] == "job_finished"]
    assert jobs and all({"candidate", "cases", "objectives", "raw"} <= set(e["data"]) for e in jobs)
    assert sorted((folder / "checkpoints").glob("gen-*.json"))[-1].name == "gen-00001.json"


def test_runs_and_status_read_run_dirs(smoke) -> None:
    home, run_id, _ = smoke
    listed = json.loads(coral(home, "runs", "--json").stdout)
    assert [r["run_id"] for r in listed] == [run_id] and listed[0]["state"] == "finished"
    status = json.loads(coral(home, "status", run_id, "--json").stdout)
    assert status["state"] == "finished" and status["log"]["generations_finished"] == 1
    plain = coral(home, "status", run_id)
    assert plain.returncode == 0 and "finished" in plain.stdout


def test_runs_and_status_show_the_best_genome_by_the_one_definition(tmp_path: Path) -> None:
    """`coral runs` and `coral status` show the best fitness: the best genome's mean over its
    evaluations with their count (coral.analysis.best), not the luckiest single evaluation."""
    from coral.analysis.best import best_genome
    from coral.home import Home

    home = tmp_path / "home"
    done = coral(home, "run", str(SMOKE), "--backend", "serial", "--handlers", FAKES, "--run-id", "b",
                 "--set", "generations=4", "--set", "population=6")
    assert done.returncode == 0, done.stderr[-2000:]
    # Progress on stderr; stdout holds the run id first and how it ended last, nothing between.
    assert "generation 0 done in" in done.stderr and "generation 3 done in" in done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "b" and lines[-1].startswith("run b finished in") and len(lines) == 2
    top = best_genome("b", Home(home))
    listed = json.loads(coral(home, "runs", "--json").stdout)
    assert (listed[0]["best_genome"], listed[0]["best_fitness"], listed[0]["best_evaluations"]) == (
        top["genome_id"], top["fitness"], top["evaluations"])
    table = coral(home, "runs").stdout.splitlines()
    assert table[0].split()[:6] == ["RUN", "STATE", "DONE", "GEN", "BEST", "N"]
    assert table[1].split()[:6] == ["b", "finished", "4/4", "-", f"{top['fitness']:.3f}", str(top["evaluations"])]
    status = json.loads(coral(home, "status", "b", "--json").stdout)
    assert (status["best_genome"], status["best_fitness"]) == (top["genome_id"], top["fitness"])
    plain = coral(home, "status", "b").stdout
    assert f"best genome {top['genome_id']}: fitness {top['fitness']:.3f} (mean of {top['evaluations']} evaluation" \
        in plain


def test_export_adapter_and_cache(smoke, tmp_path: Path) -> None:
    home, run_id, _ = smoke
    point = json.loads(sorted((home / "runs" / run_id / "checkpoints").glob("gen-*.json"))[0]
                       .read_text())
    from coral.evolution.genome import Genome

    genome_id = Genome.model_validate(point["population"][0]).id
    out = tmp_path / "exported"
    done = coral(home, "export-adapter", run_id, genome_id, "--out", str(out))
    assert done.returncode == 0, done.stderr
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and (out / "adapter_model.safetensors").stat().st_size > 0
    listed = json.loads(coral(home, "cache", "ls", "--json").stdout)
    assert listed and all(e["problem"] is None for e in listed)
    pruned = coral(home, "cache", "prune", "--dry-run")
    assert pruned.returncode == 0 and "would remove 0 entries" in pruned.stdout
    missing = coral(home, "export-adapter", run_id, "nope", "--out", str(tmp_path / "x"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    # A destination the system refuses (issue "Faults that still hurt", point 5: a traceback).
    denied = coral(home, "export-adapter", run_id, genome_id, "--out", "/proc/coral-export")
    assert denied.returncode == 2 and denied.stderr.count("\n") == 1, denied.stderr[-2000:]
    # Words that fit the dashboard's Runs page as well as the CLI (no flag names).
    assert denied.stderr.startswith("coral: error: destination /proc/coral-export: cannot write there")
    again = coral(home, "export-adapter", run_id, genome_id, "--out", str(out))
    assert again.returncode == 2 and f"destination {out} already exists" in again.stderr


def test_detach_pause_continue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    # Inherited by the detached orchestrator: slow enough that `coral pause` lands before the run
    # ends on a loaded machine (at 0.02 s x 3 generations it lost that race at load 8).
    monkeypatch.setenv("CORAL_FAKE_SLEEP", "0.1")
    done = coral(home, "run", str(SMOKE), "--run-id", "bg", "--handlers", FAKES,
                 "--set", "generations=5", "--detach")
    monkeypatch.delenv("CORAL_FAKE_SLEEP")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "bg"
    assert coral(home, "pause", "bg").returncode == 0
    deadline = time.monotonic() + 60
    while json.loads(coral(home, "status", "bg", "--json").stdout)["state"] != "paused":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert coral(home, "continue", "bg").returncode == 0
    deadline = time.monotonic() + 300
    while (state := json.loads(coral(home, "status", "bg", "--json").stdout)["state"]) != "finished":
        assert state in ("running", "paused") and time.monotonic() < deadline
        time.sleep(0.5)
    counts = json.loads(coral(home, "status", "bg", "--json").stdout)["log"]["counts"]
    assert counts["run_paused"] == 1 and counts["run_continued"] == 1
    late = coral(home, "stop", "bg")
    assert late.returncode == 2 and "finished" in late.stderr


def test_validate_reports_identical(tmp_path: Path) -> None:
    done = coral(tmp_path / "home", "validate", str(SMOKE), "--handlers", FAKES, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for side in ("serial", "queue", "modal"):  # progress on stderr while it runs
        assert f"validate: the {side} run {report[side]['run_id']}" in done.stderr
    assert "generation 1 done in" in done.stderr
    assert all(report["identical"].values())
    assert all(report["identical_to_serial"]["modal"].values())  # the Modal double too
    assert len(report["queue"]["worker_pids"]) == 2
    assert report["serial"]["worker_pids"] != report["queue"]["worker_pids"]
    # The runs it made are named as validation runs.
    made = [report[side]["run_id"] for side in ("serial", "queue", "modal")]
    assert [r.rsplit("-", 2)[1:] for r in made] == [["validate", "serial"], ["validate", "queue"],
                                                     ["validate", "modal"]]
    listed = {r["run_id"] for r in json.loads(coral(tmp_path / "home", "runs", "--json").stdout)}
    assert listed == set(made)


def test_a_model_that_cannot_load_here_is_one_line_and_registers_nothing(tmp_path: Path) -> None:
    """Preflight: config.json that does not parse or names no model_type, a tokenizer that does not
    load, weights cut off, a device this machine lacks; for `coral run`, `--detach` and `coral validate`."""
    import shutil

    import torch

    home = tmp_path / "home"
    model = tmp_path / "model"
    shutil.copytree(TINY, model)
    good_config = (model / "config.json").read_text()
    cases = [("config.json", '{"model_type": "llama",', "config.json: not valid JSON (line 1"),
             ("config.json", '{"hidden_size": 8}', "config.json: no model_type"),
             ("tokenizer.json", '{"version":', "tokenizer.json: the tokenizer does not load"),
             ("model.safetensors", "\x00", "model.safetensors: truncated (1 bytes, no safetensors header)")]
    for name, text, message in cases:
        (model / "config.json").write_text(good_config)
        original = (model / name).read_bytes()
        (model / name).write_text(text)
        for args in (("run", str(SMOKE)), ("run", str(SMOKE), "--detach")):
            done = coral(home, *args, "--set", f"model.name={model}")
            assert done.returncode == 2, (name, args, done.stderr[-500:])
            assert done.stderr.startswith("coral: error: ") and done.stderr.count("\n") == 1, done.stderr
            assert message in done.stderr
        (model / name).write_bytes(original)
    if not torch.cuda.is_available():
        commands: list[tuple[str, ...]] = [("run", str(SMOKE)), ("validate", str(SMOKE), "--handlers", FAKES)]
        for command in commands:
            done = coral(home, *command, "--set", "model.device=cuda")
            assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr[-2000:]
            assert "model.device cuda: this machine has no CUDA device" in done.stderr
    assert not (home / "runs").exists() or not list((home / "runs").iterdir())  # nothing registered


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    for args in (("run", "missing.yaml"), ("status", "no-such-run"), ("resume", "no-such-run"),
                 ("run", str(SMOKE), "--set", "population=0")):
        done = coral(tmp_path / "home", *args)
        assert done.returncode == 2, args
        assert done.stderr.startswith("coral: error: ") and done.stderr.count("\n") == 1
        assert "Traceback" not in done.stderr


def test_smoke_objectives_are_not_gated_and_the_summary_lists_baselines(smoke) -> None:
    """Syntax, style and security are scored for every candidate (runtime alone needs a
    passing case); the run's summary names both baselines and the objectives that never moved."""
    home, run_id, _ = smoke
    folder = home / "runs" / run_id
    events = [json.loads(line) for p in sorted((folder / "events").glob("*.jsonl"))
              for line in p.read_text().splitlines()]
    jobs = [e["data"] for e in events if e["type"] == "job_finished"]
    genomes = [j for j in jobs if j["genome"] not in ("baseline", "echo")]
    failing = [j["objectives"] for j in jobs if not any(c["passed"] for c in j["cases"])]
    assert failing and all(o["runtime"] == 0.0 for o in failing)
    # Not gated: a candidate that passes nothing still gets its code's security (gated, it was 0)
    # and syntax is the compiler's verdict on the candidate's code, whatever the tests said.
    assert any(o["security"] > 0 for o in failing)
    from coral.sandbox.quality import syntax_score

    assert all(j["objectives"]["syntax"] == syntax_score(j["candidate"]) for j in jobs)
    echo = [j for j in jobs if j["genome"] == "echo"]
    assert echo and all(j["objectives"]["security"] == 1.0 and j["objectives"]["syntax"] == 1.0
                        for j in echo)  # the buggy program itself: no added risk
    summary = events[-1]["data"]["summary"]
    assert set(summary["baselines"]) == {"baseline", "echo"}
    assert all(set(v) >= {"bugfix", "fixed_at_k"} for v in summary["baselines"].values())
    constant = [n for n in ("bugfix", "style", "security", "runtime", "syntax")
                if len({j["objectives"][n] for j in genomes}) == 1]
    assert summary["no_information"] == constant
    assert {n for n, v in summary["objectives"].items() if v == "no information"} == set(constant)
