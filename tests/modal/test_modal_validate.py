"""`coral validate` on every backend: serial, local worker processes and the modal backend on the
Modal double must agree event for event; a difference is named by its first event."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coral.cli import main
from coral.config import REPO_ROOT, load_config
from coral.execution.jobs import JobBodies
from coral.home import Home
from coral.modal.costs import idle_bound, run_costs
from coral.modal.validate import first_difference, validate_everywhere
from coral.run.lifecycle import resolve_config, run_from_config
from coral.services.backends import run_context

FAKES = "coral.testing.fakes:HANDLERS"
SMOKE = REPO_ROOT / "configs" / "smoke.yaml"


def test_serial_local_and_modal_double_are_identical(tmp_path: Path) -> None:
    report = validate_everywhere(SMOKE, [], 2, home=Home(tmp_path / "home"), bodies=JobBodies(FAKES))
    assert report["modal"]["state"] == "finished"
    assert report["identical_to_serial"] == {
        side: {"populations": True, "scores": True, "event_ids": True, "events": True}
        for side in ("queue", "modal")}
    assert report["first_difference"] == {"queue": None, "modal": None}
    # The modal side ran in the app's orchestrator function, as on Modal: its record is there.
    record = json.loads((tmp_path / "home" / "runs" / report["modal"]["run_id"] / "modal.json")
                        .read_text())
    assert [c["resumed"] for c in record["calls"]] == [False] and record["calls"][0]["call"]


def test_the_first_differing_event_is_named(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    for seed in (0, 1):
        config = resolve_config(SMOKE, [f"seed={seed}"], "serial")
        run_from_config(config, f"seed{seed}0000000", run_context(config, home, handlers=FAKES))
    where = first_difference(home, "seed00000000", "seed10000000")
    assert where is not None and where.startswith("event ") and "differs" in where
    assert first_difference(home, "seed00000000", "seed00000000") is None


def test_a_runs_own_accounting_gives_its_gpu_and_cpu_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CORAL_FAKE_SLEEP", "0.02")  # every fake job takes at least 20 ms
    home = Home(tmp_path / "home")
    config = resolve_config(SMOKE, ["generations=1"], "serial")
    run_from_config(config, "cost00000000", run_context(config, home, handlers=FAKES))
    costs = run_costs(home.events_dir("cost00000000"))
    n = costs["genome_evaluations"]
    assert n >= 4 and costs["tests"] == n * 6  # smoke: 6 eval problems x 1 sample per genome
    assert 1 <= costs["trainings"] <= n
    assert costs["generations"] == n - 1  # the echo baseline generates nothing
    assert costs["gpu_seconds"]["generate"] >= 0.02 * costs["generations"]
    assert costs["gpu_seconds"]["train"] >= 0.02 * costs["trainings"]
    assert costs["cpu_seconds"]["test"] >= 0.02 * costs["tests"]
    assert costs["per_genome"]["gpu_seconds"] == pytest.approx(costs["gpu_seconds"]["total"] / n)
    monkeypatch.setenv("CORAL_HOME", str(home.root))
    assert main(["modal", "cost", "cost00000000"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"run cost00000000: {n} genome evaluations") and "GPU seconds" in out
    # What idle time cost, bounded from the run's config: smoke's defaults (H100, 60 s idle).
    bound = idle_bound(costs, load_config(SMOKE), 1)
    train = bound["stages"]["train"]
    assert train["idle_seconds_at_most"] == min(8, costs["trainings"]) * 62
    assert train["usd_idle_at_most"] == pytest.approx(train["idle_seconds_at_most"] * 0.001097)
    assert "generate on H100:" in out and "at most" in out and "GPU-s idle" in out
