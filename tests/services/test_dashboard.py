"""coral.services.dashboard without Streamlit: the launch form's validation and command, launching a
detached run (on stand-in job bodies), its launch state, run control, progress, deletion."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from coral.cli import build_parser
from coral.cli.dashboard_cmd import streamlit_command
from coral.errors import ConfigError, CoralError
from coral.execution.jobs import JobBodies
from coral.home import Home
from coral.run.registry import run_info
from coral.services.dashboard import (
    SMOKE_CONFIG,
    LaunchRequest,
    choices,
    delete_run,
    launch_run,
    launch_state,
    queue_depths,
    request_control,
)

FAKES = "coral.testing.fakes:HANDLERS"


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_launch_request_reads_the_config_and_builds_an_argument_list() -> None:
    request = LaunchRequest.from_config(SMOKE_CONFIG)
    assert (request.population, request.generations, request.backend) == (4, 2, "local")
    edited = request.with_values(population=6, seed=3, strategy="random")
    assert edited.validate().population == 6 and edited.validate().strategy == "random"
    cmd = edited.with_values(bodies=JobBodies("x:Y")).command("r1")
    assert cmd[:4] == [sys.executable, "-m", "coral", "run"] and "--detach" not in cmd  # started detached
    assert cmd[cmd.index("--run-id") + 1] == "r1" and cmd[-2:] == ["--handlers", "x:Y"]
    sets = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--set"]
    assert "population=6" in sets and "seed=3" in sets and "strategy=random" in sets
    assert "--handlers" not in edited.command("r1")


@pytest.mark.parametrize(("values", "message"), [
    ({"population": 1}, "population"),
    ({"generations": 0}, "generations"),
    ({"workers": 0}, "backend.workers"),
    ({"seed": -1}, "seed"),
])
def test_invalid_values_are_one_clear_line(values: dict, message: str) -> None:
    request = LaunchRequest.from_config(SMOKE_CONFIG).with_values(**values)
    with pytest.raises(ConfigError, match=message) as err:
        request.validate()
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError):  # nothing is started for an invalid request
        launch_run(request)
    assert not Home().runs.exists() or not any(Home().runs.iterdir())


def test_choices_come_from_the_config_model() -> None:
    assert choices("strategy") == ["evolution", "random", "grid"]
    assert choices("backend.kind") == ["local", "modal", "serial"]


def test_launch_returns_at_once_and_the_run_finishes(monkeypatch: pytest.MonkeyPatch) -> None:
    request = LaunchRequest.from_config(SMOKE_CONFIG).with_values(backend="serial")
    run_id = launch_run(request.with_values(bodies=JobBodies(FAKES)), run_id="dash-finish")
    assert launch_state(run_id).state in ("launching", "starting", "running", "finished")
    wait_for(lambda: launch_state(run_id).state == "finished", what="the run to finish")
    assert run_info(Home(), run_id).generation == 1
    with pytest.raises(CoralError, match="finished; only a running or paused run"):
        request_control(run_id, "stop")
    delete_run(run_id)
    assert not Home().run_dir(run_id).exists()


def test_stop_from_the_dashboard_stops_a_running_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORAL_FAKE_SLEEP", "0.05")  # slow jobs: the run is still going
    request = LaunchRequest.from_config(SMOKE_CONFIG).with_values(generations=50, workers=1)
    run_id = launch_run(request.with_values(bodies=JobBodies(FAKES)), run_id="dash-stop")
    wait_for(lambda: launch_state(run_id).state == "running", what="the run to start")
    with pytest.raises(CoralError, match="stop it before deleting"):
        delete_run(run_id)
    assert "stop requested" in request_control(run_id, "stop")
    wait_for(lambda: run_info(Home(), run_id).state == "stopped", what="the run to stop")
    depths = queue_depths(run_id)
    assert set(depths) == {"train", "generate", "test", "events"}


def test_a_launch_with_a_missing_benchmark_or_model_is_refused_before_registering(tmp_path: Path) -> None:
    # Checked before anything starts: no run folder, no launcher, one line naming the problem.
    config = tmp_path / "broken.yaml"
    text = SMOKE_CONFIG.read_text().replace("../data/problems", str(tmp_path / "nope"))
    config.write_text(text.replace("../data/models", str(SMOKE_CONFIG.parent.parent / "data" / "models")))
    request = LaunchRequest.from_config(config).with_values(backend="serial")
    with pytest.raises(CoralError, match="nope") as caught:
        launch_run(request.with_values(bodies=JobBodies(FAKES)), run_id="dash-broken")
    assert "\n" not in str(caught.value)
    model = LaunchRequest.from_config(SMOKE_CONFIG).with_values(model=str(tmp_path / "no-model"))
    with pytest.raises(CoralError, match="model folder not found"):
        launch_run(model.with_values(bodies=JobBodies(FAKES)), run_id="dash-no-model")
    assert not Home().run_dir("dash-broken").exists() and not Home().run_dir("dash-no-model").exists()


def test_unknown_control_and_unknown_run_are_errors() -> None:
    with pytest.raises(CoralError, match="unknown run control"):
        request_control("any", "explode")
    with pytest.raises(CoralError, match="no run"):
        delete_run("nope")


def test_coral_dashboard_serves_app_py_on_loopback() -> None:
    args = build_parser().parse_args(["dashboard"])
    assert args.address == "127.0.0.1" and args.port == 8501
    cmd = streamlit_command(args.port, args.address)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and Path(cmd[4]).name == "app.py"
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert "--" not in cmd  # no stand-in bodies: app.py gets no arguments
    tests_only = streamlit_command(args.port, args.address, JobBodies("x:Y"))
    assert tests_only[-3:] == ["--", "--handlers", "x:Y"]  # what pages.job_bodies() reads back


def test_the_launch_estimate_counts_no_training_in_the_final_rounds(tmp_path: Path) -> None:
    """A final round costs a search generation's generate and test jobs but no train job."""
    from coral.config import load_config
    from coral.services.live import expected_seconds

    home = Home(tmp_path / "home")
    smoke = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
    search, _ = expected_seconds(load_config(smoke, ["generations=2"]), home)
    more, _ = expected_seconds(load_config(smoke, ["generations=4"]), home)
    rounds, _ = expected_seconds(load_config(smoke, ["generations=4", "evolution.final_rounds=2"]), home)
    assert search < rounds < more
