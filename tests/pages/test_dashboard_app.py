"""Every dashboard page rendered with st.testing's AppTest: empty home, a finished run, the
launch form (valid and invalid values), run management. Live refresh needs a real browser
(tests/pages/test_browser_dashboard.py): AppTest never fires `run_every`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from coral import analysis
from coral.home import Home
from coral.run.events import read_events
from coral.run.registry import run_info

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "app.py")
FAKES = "coral.testing.fakes:HANDLERS"
PAGES = ["pages/launch.py", "pages/live.py", "pages/pareto.py", "pages/compare.py", "pages/lineage.py",
         "pages/runs.py"]
TIMEOUT = 60


def fake_run(home: Path, run_id: str, *extra: str) -> None:
    """A finished run in seconds: the engine on stand-in job bodies, serial backend."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update({"CORAL_HOME": str(home), "PYTHONPATH": str(REPO)})
    done = subprocess.run([sys.executable, "-m", "coral", "run", str(REPO / "configs" / "smoke.yaml"),
                           "--backend", "serial", "--handlers", FAKES, "--run-id", run_id, *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="session")
def finished_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("dash") / "home"
    fake_run(home, "run-a")
    fake_run(home, "run-b", "--set", "seed=7", "--set", "generations=3")
    fake_run(home, "run-c", "--set", "seed=1")  # a replicate of run-a: same config, another seed
    return home


@pytest.fixture(autouse=True)
def _stop_ingestors() -> Iterator[None]:
    yield
    st.cache_resource.clear()  # on_release stops each test's ingestor thread


def wait_for(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def page(path: str, handlers: str | None = FAKES) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["job_handlers"] = handlers  # what `coral dashboard --handlers` passes
    at.run()
    if path != PAGES[0]:
        at.switch_page(path).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("title", "info", "error", "warning", "success", "markdown",
                                  "caption", "code") for e in at.get(kind)]
    return "\n".join(str(p) for p in parts)


def table_with(at: AppTest, column: str):
    """The first dataframe on the page that has `column` (dataframes have no widget keys here)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def visit(at: AppTest, path: str) -> AppTest:
    at.switch_page(path).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_every_page_renders_with_no_runs() -> None:
    at = page(PAGES[0])
    assert [b.label for b in at.button] == ["Start run"]
    assert at.selectbox(key="launch_config").value == "quick.yaml"
    assert "Expected duration: about" in texts(at)
    for path in PAGES[1:]:
        visit(at, path)
        assert "No runs yet" in texts(at), path
        assert "Launch the smoke config" in [b.label for b in at.button], path


@pytest.mark.slow
def test_every_page_renders_a_finished_run(finished_home: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORAL_HOME", str(finished_home))
    at = page("pages/live.py")
    assert "No runs yet" not in texts(at)
    # The newest finished run (run-c); 0-based generation numbers, finished generations counted.
    assert [m.value for m in at.metric[:3]] == ["finished", "-", "2 / 2"]
    genomes, chart = at.get("plotly_chart")  # each genome as it landed; one figure of nine panels
    points = json.loads(genomes.proto.spec)["data"]
    scores = analysis.load_run("run-c", Home(finished_home)).scores  # one row per genome per generation
    assert sum(len(t["y"]) for t in points) == len(scores) >= 4 * 2
    assert [t["name"] for t in points] == ["generation 0", "generation 1"]
    spec = json.loads(chart.proto.spec)
    titles = [a["text"] for a in spec["layout"]["annotations"] if a["text"].startswith("<b>")]
    assert [t.split()[0] for t in titles] == ["<b>fitness", "<b>bugfix", "<b>style", "<b>security",
                                              "<b>runtime", "<b>syntax", "<b>fix_chance", "<b>diversity",
                                              "<b>adapter"]
    assert sum(key.startswith("yaxis") for key in spec["layout"]) == 9
    assert all(b.disabled for b in at.button)  # nothing to pause or stop

    visit(at, "pages/pareto.py")
    shown = texts(at)
    last = scores[scores["generation"] == scores["generation"].max()]  # the page opens on the last one
    assert len(at.get("plotly_chart")) == 1 and at.dataframe[0].value.shape[0] == len(last) >= 4
    assert "generated fix" in shown and "(buggy)" in shown  # the diff
    assert len(at.get("image")) == 2  # the CA seed grid and its final grid

    visit(at, "pages/compare.py")  # opens on the newest run's replicates: run-c and run-a
    assert at.multiselect(key="compare-runs").value == ["run-c", "run-a"]
    traces = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    # Two seeds: the 95% band is too wide to read (t = 12.7), so none is drawn and the page says so.
    assert not [t for t in traces if t.get("fill") == "toself"]
    assert "n = 2 seeds" in traces[0]["name"] and traces[1]["name"].startswith("baseline")
    assert any("too wide to read" in w.value and "n = 2" in w.value for w in at.warning)
    groups = table_with(at, "seeds")
    assert list(groups["replicates"]) == [2] and list(groups["seeds"]) == ["0, 1"]
    at.multiselect(key="compare-runs").select("run-b").run()
    assert len(table_with(at, "seeds")) == 2  # run-b's config is another group
    assert set(table_with(at, "key")["key"]) >= {"seed", "generations"}  # config keys that differ
    # No pick re-evaluated yet: the page says what would show one here.
    assert "`coral evaluate RUN ...` evaluates each finished run's pick again" in texts(at)
    assert "run-a: not re-evaluated: `coral evaluate run-a`" in texts(at)

    visit(at, "pages/lineage.py")
    (graph,) = at.get("plotly_chart")
    spec = json.loads(graph.proto.spec)
    path = table_with(at, "depth")
    assert path["depth"].tolist() == list(range(len(path))) and path["generation"].iloc[-1] == 0
    assert path["generation"].is_monotonic_decreasing
    assert any(t["name"] == "path of the fitter parent" and len(t["x"]) == 3 * (len(path) - 1)
               for t in spec["data"])

    visit(at, "pages/runs.py")
    table = at.dataframe[0].value
    assert list(table["run_id"]) == ["run-c", "run-b", "run-a"]
    assert list(table["finished"]) == ["2 / 2", "3 / 3", "2 / 2"] and set(table["running"]) == {"-"}
    assert set(table["state"]) == {"finished"} and table["best_fitness"].notna().all()


def test_pareto_page_switches_to_three_objectives(finished_home: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORAL_HOME", str(finished_home))
    at = page("pages/pareto.py")
    at.radio[0].set_value("3-D").run()
    assert not at.exception
    fig = at.get("plotly_chart")[0].proto.spec
    assert "scatter3d" in fig


def test_launch_form_rejects_invalid_values_with_a_clear_line(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "no-modal.toml"))  # no credentials
    at = page("pages/launch.py")
    at.number_input(key="population-quick.yaml").set_value(1).run()
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "population" in errors[0] and "greater than or equal to 2" in errors[0]
    assert at.button(key="start-run").disabled
    assert not Home().runs.exists() or not any(Home().runs.iterdir())  # nothing launched

    at.number_input(key="population-quick.yaml").set_value(4)
    at.number_input(key="workers-quick.yaml").set_value(0).run()
    assert "backend.workers" in at.error[0].value

    # Checked before anything is registered: a model folder that is not there, Modal credentials.
    at.number_input(key="workers-quick.yaml").set_value(2)
    at.text_input(key="model-quick.yaml").set_value("./no-such-model").run()
    assert at.error[0].value.startswith("model folder not found:") and at.button(key="start-run").disabled
    # A model folder whose config.json does not parse: one line, before anything is registered.
    broken = tmp_path / "broken-model"
    shutil.copytree(REPO / "data" / "models" / "tiny-code", broken)
    (broken / "config.json").write_text('{"model_type": "llama",')
    at.text_input(key="model-quick.yaml").set_value(str(broken)).run()
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "config.json: not valid JSON" in errors[0], errors
    assert at.button(key="start-run").disabled
    at.text_input(key="model-quick.yaml").set_value("../data/models/tiny-code")
    at.selectbox(key="backend-quick.yaml").set_value("modal").run()
    assert at.number_input(key="workers-quick.yaml").disabled  # Modal scales its own workers
    assert "no Modal credentials" in at.error[0].value
    assert not Home().runs.exists() or not any(Home().runs.iterdir())


def test_launch_form_starts_a_detached_run(monkeypatch: pytest.MonkeyPatch) -> None:
    at = page("pages/launch.py")
    at.selectbox(key="launch_config").set_value("smoke.yaml").run()
    at.number_input(key="generations-smoke.yaml").set_value(1)
    at.selectbox(key="backend-smoke.yaml").set_value("serial")
    at.button(key="start-run").click().run()
    assert not at.exception and not at.error
    run_id = at.session_state["run_id"]
    assert "Live run" in texts(at)  # switched to the live page
    wait_for(lambda: run_info(Home(), run_id).state == "finished")
    assert run_info(Home(), run_id).generations == 1


@pytest.mark.slow
def test_empty_state_button_launches_the_smoke_config(monkeypatch: pytest.MonkeyPatch) -> None:
    at = page("pages/runs.py")
    at.button[0].click().run()
    run_id = at.session_state["run_id"]
    wait_for(lambda: run_info(Home(), run_id).state == "finished")
    assert run_info(Home(), run_id).generations == 2  # smoke.yaml as it is


@pytest.mark.slow
def test_runs_page_exports_parquet_and_deletes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas as pd

    home = tmp_path / "manage"
    fake_run(home, "doomed")
    monkeypatch.setenv("CORAL_HOME", str(home))
    at = page("pages/runs.py")
    at.button(key="export-parquet").click().run()
    assert not at.exception and at.success, texts(at)
    folder = home / "exports" / "doomed" / "parquet"
    evaluations = pd.read_parquet(folder / "evaluations.parquet")  # genomes and the baselines
    eval_problems = len(json.loads((REPO / "configs" / "smoke-split.json").read_text())["eval"])
    tests_run = sum(e.type == "job_finished" for e in read_events(Home(home).events_dir("doomed")))
    # One row per test the run ran: at least generations x population x eval problems, plus baselines.
    assert len(evaluations) == tests_run > 2 * 4 * eval_problems
    assert set(pd.read_parquet(folder / "scores.parquet")["generation"]) == {0, 1}

    at.button(key="export-adapter").click().run()  # stand-in runs train no real adapter
    assert at.error and "adapter" in at.error[0].value.lower()

    assert at.button(key="delete-run").disabled
    at.checkbox(key="delete-sure-doomed").check().run()
    at.button(key="delete-run").click().run()
    assert not (home / "runs" / "doomed").exists()
    assert "No runs yet" in texts(at)
