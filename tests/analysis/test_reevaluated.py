"""`coral evaluate`: real micro runs of configs/local.yaml (evolution and random search, seeds 0 and
1), each pick re-evaluated on fresh seeds with its own adapter, the file ingested into the store,
summarised by replicate group with differences paired by seed and instance, and drawn by the
Compare page; a bad file is one line naming it, and nothing else of the run is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from coral.analysis.best import best_genome
from coral.analysis.reevaluated import reevaluation_summary, reevaluations
from coral.errors import CoralError
from coral.home import Home
from coral.run.reevaluation import FOLDER, fresh_seeds, read_reevaluation, reevaluate
from coral.run.registry import write_status
from coral.services.dashboard import reevaluation_job, start_reevaluation
from coral.store.ingest import Ingestor

REPO = Path(__file__).resolve().parents[2]
# Eval instances the committed model fixes now and then at k = 3: differences that can be non-zero.
EVAL = ["first_occurrence_02", "run_length_encode_03", "balanced_brackets_03", "detect_cycle_03"]
RUNS = {"evo-s0": ("seed=0",), "rnd-s0": ("seed=0", "strategy=random"),
        "evo-s1": ("seed=1",), "rnd-s1": ("seed=1", "strategy=random")}


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update({"CORAL_HOME": str(home), "PYTHONPATH": str(REPO)})
    return env


def _coral(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "coral", *args], env=_env(home), capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("reevaluated")
    split = json.loads((REPO / "configs" / "local.split.json").read_text())
    micro = root / "split.json"
    micro.write_text(json.dumps({"train": split["train"][:4], "eval": EVAL}))
    home = root / "home"
    for run_id, overrides in RUNS.items():
        sets = ["generations=3", "evolution.final_rounds=1", f"benchmark.split={micro}", "training.steps=2",
                "benchmark.samples=1", "population=2", *overrides]
        done = _coral(home, "run", str(REPO / "configs" / "local.yaml"), "--run-id", run_id, "--workers", "1",
                      *(x for item in sets for x in ("--set", item)))
        assert done.returncode == 0, done.stderr[-2000:]
    done = _coral(home, "evaluate", *RUNS, "--fresh", "2", "--samples", "3", "--on", "run")
    assert done.returncode == 0, done.stderr[-2000:]
    return home, done


def _record(home: Home, run_id: str):
    (path,) = (home.run_dir(run_id) / FOLDER).glob("*.json")
    return path, read_reevaluation(path)


# The module fixture's four micro runs and their re-evaluation count to the first test that uses it:
# about 100 s on 2 idle cores, three times that on a loaded machine.
FIXTURE_TIMEOUT = pytest.mark.timeout(900)


@pytest.mark.slow
@FIXTURE_TIMEOUT
def test_each_pick_is_reevaluated_stored_and_paired_by_seed(evaluated) -> None:
    root, done = evaluated
    home = Home(root)
    records = {}
    for run_id, overrides in RUNS.items():
        path, record = _record(home, run_id)
        seed = int(overrides[0].split("=")[1])
        # The run's own pick, with the adapter the run trained for it, on seeds no generation used.
        assert record.genome_id == best_genome(run_id, home)["genome_id"]
        assert path.name == f"{record.genome_id}.run.k3.x2.json"
        assert record.seeds == fresh_seeds(seed, 2) and record.instances == sorted(EVAL) and record.samples == 3
        assert (home.adapters / record.adapter).is_dir()
        records[run_id] = record
    # One seed, one set of untuned answers: what makes the two strategies' differences pair.
    for seed in ("s0", "s1"):
        assert records[f"evo-{seed}"].baseline == records[f"rnd-{seed}"].baseline
    assert records["evo-s0"].seeds != records["evo-s1"].seeds
    assert sum(r.baseline.fixed_at_k for r in records.values()) > 0  # these instances are not all unfixable

    stored = reevaluations(list(RUNS), home).set_index("run_id")
    for run_id, record in records.items():
        assert stored.loc[run_id, "fixed_at_k"] == pytest.approx(record.model.fixed_at_k)
        assert json.loads(stored.loc[run_id, "solved"]) == record.model.solved

    summary = reevaluation_summary(list(RUNS), home)
    groups = summary["groups"]
    assert [label.split(",")[0] for label in groups["label"]] == ["evolution", "random"]
    assert list(groups["n"]) == [2, 2] and summary["missing"] == []
    evo = [records["evo-s0"].model.fixed_at_k, records["evo-s1"].model.fixed_at_k]
    rnd = [records["rnd-s0"].model.fixed_at_k, records["rnd-s1"].model.fixed_at_k]
    assert groups["mean"].iloc[0] == pytest.approx(sum(evo) / 2)
    (difference,) = summary["differences"].itertuples()
    assert difference.seeds == 2 and difference.by_seed == pytest.approx((evo[0] - rnd[0] + evo[1] - rnd[1]) / 2)
    per_instance = [a - b for s in ("s0", "s1") for a, b in zip(records[f"evo-{s}"].model.solved,
                                                                 records[f"rnd-{s}"].model.solved, strict=True)]
    assert difference.by_instance == pytest.approx(sum(per_instance) / len(per_instance))
    assert "over 2 shared seeds" in done.stdout and done.stdout.count("genome ") == 4

    # The same pick, seeds and instances give the same answers: evaluating again changes no figure.
    path, before = _record(home, "evo-s0")
    reevaluate(home, "evo-s0", best_genome("evo-s0", home), fresh=2, samples=3, on="run")
    _, again = _record(home, "evo-s0")
    assert again.model == before.model and again.baseline == before.baseline


@pytest.mark.slow
@FIXTURE_TIMEOUT
def test_a_bad_file_is_named_and_the_rest_of_the_run_stays(evaluated, tmp_path: Path) -> None:
    root, _ = evaluated
    home = Home(tmp_path / "copy")
    import shutil

    shutil.copytree(root, home.root, symlinks=True, ignore=shutil.ignore_patterns("store*", "queue*"))
    good, record = _record(home, "evo-s0")
    truncated = good.with_name("0000.run.k3.x1.json")
    truncated.write_text(good.read_text()[: len(good.read_text()) // 2])
    with Ingestor(home, None) as ingestor:
        ingestor.run_once()
        reason = ingestor.status.unreadable["evo-s0"]
        assert reason.startswith(str(truncated)) and "not a re-evaluation (invalid JSON" in reason
        assert "\n" not in reason and set(ingestor.status.unreadable) == {"evo-s0"}
        rows = ingestor.store.con.execute("SELECT run_id, file FROM reevaluations ORDER BY run_id").fetchall()
        assert ("evo-s0", good.name) in rows and len(rows) == 4  # the good file of the same run is stored
        assert ingestor.store.con.execute("SELECT count(*) FROM generations WHERE run_id = 'evo-s0'").fetchone()[0] == 3

        # A file whose numbers disagree with its instances is refused the same way, naming the field.
        data = json.loads(good.read_text())
        data["model"]["solved"] = data["model"]["solved"][:-1]
        truncated.write_text(json.dumps(data))
        ingestor.run_once()
        assert "model.solved has 3 values for 4 instances" in ingestor.status.unreadable["evo-s0"]

        # Another run's file copied into this run's folder is refused, not stored under either run.
        other, _ = _record(home, "rnd-s0")
        truncated.write_text(other.read_text())
        ingestor.run_once()
        assert "a re-evaluation of run 'rnd-s0', not of 'evo-s0'" in ingestor.status.unreadable["evo-s0"]
        assert ingestor.store.con.execute("SELECT count(*) FROM reevaluations WHERE file = ?",
                                          [truncated.name]).fetchone()[0] == 0

        truncated.unlink()
        good.unlink()  # a removed file's row goes too
        ingestor.run_once()
        assert ingestor.status.unreadable == {}
        assert ingestor.store.con.execute("SELECT count(*) FROM reevaluations WHERE run_id = 'evo-s0'"
                                          ).fetchone()[0] == 0
    assert record.run_id == "evo-s0"


def test_evaluate_refuses_an_unfinished_or_unknown_run_in_one_line(tmp_path: Path) -> None:
    home = Home(tmp_path / "home").ensure()
    done = _coral(home.root, "evaluate", "no-such-run", timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"coral: error: no run 'no-such-run' in {home.runs}"
    home.run_dir("going").mkdir(parents=True)
    (home.run_dir("going") / "config.yaml").write_text("run_id: going\nconfig: {}\n")
    write_status(home, "going", "running", pid=os.getpid())
    done = _coral(home.root, "evaluate", "going", timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "coral: error: run going is running: its pick is final once it has finished")
    bad = _coral(home.root, "evaluate", "going", "--fresh", "0", timeout=120)
    assert bad.returncode == 2 and "expected a positive integer, got 0" in bad.stderr


@pytest.mark.slow
@FIXTURE_TIMEOUT
def test_compare_page_draws_the_reevaluation_by_group(evaluated, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = evaluated
    monkeypatch.setenv("CORAL_HOME", str(root))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    try:
        _check_compare_page(at, root)
    finally:
        st.cache_resource.clear()  # stops the page's ingestor thread (on_release), as the dashboard tests do


def _check_compare_page(at: AppTest, root: Path) -> None:
    at.run()
    at.switch_page("pages/compare.py").run()
    at.multiselect(key="compare-runs").set_value(list(RUNS)).run()
    assert not at.exception, [e.value for e in at.exception]
    charts = {json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec)
              for c in at.get("plotly_chart")}
    (title,) = [t for t in charts if t.startswith("fresh fixed@k")]
    bars = [t for t in charts[title]["data"] if t["type"] == "bar"]
    assert [t["name"] for t in bars] == ["the run's pick", "no adapter, same seeds"]
    summary = reevaluation_summary(list(RUNS), Home(root))
    assert bars[0]["y"] == pytest.approx(list(summary["groups"]["mean"]))
    assert "4 run instances, 2 fresh seeds, k = 3" in title
    tables = [d.value for d in at.dataframe]
    assert any(list(t.columns[:3]) == ["a", "b", "seeds"] and list(t["seeds"]) == [2] for t in tables)
    # On the classes the base withheld: the same section over those instances only, or why there are none.
    at.radio(key="compare-reevaluated-measure").set_value("withheld_fixed_at_k").run()
    assert not at.exception, [e.value for e in at.exception]
    withheld = reevaluation_summary(list(RUNS), Home(root), "withheld_fixed_at_k")
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert any(t.startswith("fresh fixed@k on the classes the base withheld") for t in titles) == (
        not withheld["groups"].empty)

    # The Runs page quotes each run's fresh figure beside its recorded best.
    at.switch_page("pages/runs.py").run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value.set_index("run_id")
    for run_id in RUNS:
        _, record = _record(Home(root), run_id)
        assert table.loc[run_id, "fresh_fixed_at_k"] == pytest.approx(record.model.fixed_at_k)
        assert table.loc[run_id, "baseline_fixed_at_k"] == pytest.approx(record.baseline.fixed_at_k)


@pytest.mark.slow
@FIXTURE_TIMEOUT
def test_compare_page_reevaluates_the_rest_in_the_background(evaluated, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The page offers the finished runs not re-evaluated yet; its button runs `coral evaluate` in
    the background, one at a time per home, and the result joins the section once ingested."""
    import shutil

    root, _ = evaluated
    home = Home(tmp_path / "copy")
    shutil.copytree(root, home.root, symlinks=True, ignore=shutil.ignore_patterns("store*", "queue*", "evaluat*"))
    shutil.rmtree(home.run_dir("rnd-s1") / FOLDER)
    monkeypatch.setenv("CORAL_HOME", str(home.root))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    try:
        at.run()
        at.switch_page("pages/compare.py").run()
        at.multiselect(key="compare-runs").set_value(list(RUNS)).run()
        assert not at.exception, [e.value for e in at.exception]
        button = at.button(key="compare-reevaluate")
        assert button.label == "Re-evaluate 1 pick on fresh seeds"
        assert "rnd-s1 (not re-evaluated: `coral evaluate rnd-s1`)" in " ".join(i.value for i in at.info)
        button.click().run()  # starts it, then looks again every 3 s until it has finished
        assert not at.exception, [e.value for e in at.exception]
        job = reevaluation_job(home)
        assert job is not None and job["runs"] == ["rnd-s1"] and not job["running"] and job["error"] is None
        (path,) = (home.run_dir("rnd-s1") / FOLDER).glob("*.json")
        assert read_reevaluation(path).genome_id == best_genome("rnd-s1", home)["genome_id"]
        assert path.name.endswith(".run.k3.x2.json")  # the setting of the runs shown beside it
        for _ in range(60):  # the page's ingestor stores the new file within a second or two
            if not at.button or all(b.key != "compare-reevaluate" for b in at.button):
                break
            at.run()
        assert all(b.key != "compare-reevaluate" for b in at.button)
        summary = reevaluation_summary(list(RUNS), home)
        assert summary["missing"] == [] and list(summary["groups"]["n"]) == [2, 2]
    finally:
        st.cache_resource.clear()

    # One at a time: a second start while one runs names the one running.
    setting = {"on": "run", "samples": 3, "fresh": 2}
    first = start_reevaluation(home, ["evo-s0"], setting)
    try:
        with pytest.raises(CoralError, match=f"a re-evaluation is already running \\(process {first}: evo-s0\\)"):
            start_reevaluation(home, ["evo-s1"], setting)
    finally:
        deadline = time.monotonic() + 300
        while (job := reevaluation_job(home)) is not None and job["running"]:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    assert job is not None and job["error"] is None
