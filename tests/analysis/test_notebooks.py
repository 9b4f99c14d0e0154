"""The analysis notebooks (notebooks/*.py, jupytext percent) run headless through nbclient
against small stand-in-body runs, twice (each in a fresh kernel, then all in one kernel: same
key numbers), and their KEY_NUMBERS equal what coral.analysis (or the run's own logs) says.
One notebook also runs while the ingestor ingests a live run: it reads the snapshot, never the
writer's database.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import jupytext
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient

from coral import analysis
from coral.analysis.best import best_genome, fitness_by_genome, rank_best
from coral.analysis.notebook import parse_key_numbers, run_id_from_env, run_ids_from_env
from coral.errors import CoralError
from coral.evolution.genome import Genome
from coral.home import Home
from coral.model.adapters import gene_key
from coral.run.events import read_events
from coral.run.lifecycle import resolve_config, run_from_config
from coral.services.backends import run_context
from coral.store.ingest import Ingestor

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"
FAKES = "coral.testing.fakes:HANDLERS"
# Constant dropout: heavy genes take few values, so the cache gets hits to account for.
BASE = ["generations=3", "population=6", "genes.dropout=[0.05,0.05]"]
RUNS = {"evo-s0": ["seed=0"], "evo-s1": ["seed=1"], "grid-s0": ["strategy=grid"],
        "random-s0": ["strategy=random"]}
# Notebook -> environment. 03 and 05 use the defaults: newest run, every run.
PLAN = {
    "01_run_overview": {"CORAL_RUN_ID": "evo-s0"},
    "02_pareto_hypervolume": {"CORAL_RUN_ID": "evo-s0"},
    "03_gene_effects": {"CORAL_BOOTSTRAP": "400"},
    "04_cache_efficiency": {"CORAL_RUN_ID": "evo-s0"},
    "05_compare_runs": {},
}
NOTEBOOK_ENV = ("CORAL_RUN_ID", "CORAL_RUN_IDS", "CORAL_OBJECTIVES", "CORAL_METRIC", "CORAL_BOOTSTRAP")


def _kernel_name() -> str:
    """The venv's python3 kernel; installed into the venv (--sys-prefix) if it is missing."""
    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix"], check=True,
                       capture_output=True, timeout=120)
    return "python3"


def _env(home: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_") and k not in NOTEBOOK_ENV}
    env.update({"CORAL_HOME": str(home), "PYTHONPATH": str(REPO), **extra})
    return env


def _notebook(name: str) -> nbformat.NotebookNode:
    return jupytext.read(REPO / "notebooks" / f"{name}.py")


def _key_numbers(nb: nbformat.NotebookNode) -> list[dict]:
    """Every KEY_NUMBERS line the notebook printed, in order."""
    text = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.get("outputs", []) if out.get("output_type") == "stream")
    return [parse_key_numbers(line) for line in text.splitlines() if line.startswith("KEY_NUMBERS ")]


async def _execute(nb: nbformat.NotebookNode, home: Path, extra: dict[str, str],
                   gate: asyncio.Semaphore) -> list[dict]:
    async with gate:
        client = NotebookClient(nb, kernel_name=_kernel_name(), timeout=120,
                                resources={"metadata": {"path": str(REPO)}})
        await client.async_execute(env=_env(home, extra))
    nbformat.validate(nb)
    return _key_numbers(nb)


def execute_all(jobs: list[tuple[nbformat.NotebookNode, Path, dict[str, str]]], parallel: int = 3) -> list[list[dict]]:
    """Execute notebooks, each in a fresh kernel, a few at a time (kernels wait on I/O)."""
    async def main() -> list[list[dict]]:
        gate = asyncio.Semaphore(parallel)
        return list(await asyncio.gather(*(_execute(nb, h, e, gate) for nb, h, e in jobs)))

    return asyncio.run(main())


def one_kernel_notebook(plan: dict[str, dict[str, str]]) -> nbformat.NotebookNode:
    """Every planned notebook in one notebook, each after a cell that sets its environment: a
    second pass that also shows no notebook depends on a fresh kernel (and starts one kernel)."""
    combined = nbformat.v4.new_notebook(metadata=_notebook(next(iter(plan))).metadata)
    for name, env in plan.items():
        reset = {k: env.get(k) for k in NOTEBOOK_ENV}
        combined.cells.append(nbformat.v4.new_code_cell(
            "import os\n"
            f"for _k, _v in {reset!r}.items():\n"
            "    os.environ.pop(_k, None) if _v is None else os.environ.__setitem__(_k, _v)"))
        combined.cells.extend(_notebook(name).cells)
    return combined


@pytest.fixture(scope="session")
def store_home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    home = Home(tmp_path_factory.mktemp("notebook-runs"))
    for run_id, overrides in RUNS.items():
        config = resolve_config(SMOKE, BASE + overrides, "serial")
        run_from_config(config, run_id, run_context(config, home, handlers=FAKES, threads=1))
    with Ingestor(home, None) as ingestor:  # the snapshot the notebooks read, as a dashboard leaves it
        ingestor.run_once(snapshot=True)
    return home


@pytest.fixture(scope="session")
def executed(store_home: Home) -> dict[str, list[dict]]:
    """name -> [KEY_NUMBERS from a fresh kernel, KEY_NUMBERS from the one-kernel second pass]."""
    jobs = [(_notebook(name), store_home.root, env) for name, env in PLAN.items()]
    jobs.append((one_kernel_notebook(PLAN), store_home.root, {}))
    *fresh, (shared) = execute_all(jobs)
    assert len(shared) == len(PLAN)
    return {name: [numbers[-1], shared[i]] for i, (name, numbers) in enumerate(zip(PLAN, fresh, strict=True))}


def test_notebooks_are_deterministic(executed: dict[str, list[dict]]) -> None:
    for name, (first, second) in executed.items():
        assert first == second, name


def test_run_overview_matches_analysis(executed, store_home: Home) -> None:
    got = executed["01_run_overview"][0]
    data = analysis.load_run("evo-s0", store_home)
    # The one best (coral.analysis.best), not the luckiest single evaluation.
    top = best_genome("evo-s0", store_home)
    best = top["fitness"]
    assert (got["best_genome"], got["best_fitness"], got["best_evaluations"]) == (
        top["genome_id"], best, top["evaluations"])
    assert got["baseline_fitness"] == analysis.baseline("evo-s0", store_home)["fitness"]
    assert got["gain_over_baseline"] == pytest.approx(best - got["baseline_fitness"])
    assert got["final_mean_fitness"] == data.generations["mean_fitness"].iloc[-1]
    assert (got["state"], got["generations_done"]) == ("finished", 3)
    # One scored row per genome evaluated in a generation (survivors are evaluated again, so
    # more than population x generations), counted here from the run's own log.
    assert got["n_scored"] == len(_evaluated(store_home, "evo-s0")) > 18
    assert got["n_eval"] == len(json.loads(data.run["eval_problems"])) > 0


def test_pareto_notebook_matches_analysis(executed, store_home: Home) -> None:
    got = executed["02_pareto_hypervolume"][0]
    assert got["objectives"] == ["bugfix", "style"] and got["generations"] == [0, 1, 2]
    assert got["hypervolume"] == [analysis.front_hypervolume("evo-s0", g, home=store_home) for g in range(3)]
    assert got["front_sizes"] == [int(analysis.pareto("evo-s0", g, home=store_home)["on_front"].sum())
                                  for g in range(3)]
    scores = analysis.load_run("evo-s0", store_home).scores
    assert got["cumulative_hypervolume"][-1] == analysis.hypervolume(scores[["bugfix", "style"]].to_numpy())
    cumulative = got["cumulative_hypervolume"]
    assert all(a <= b for a, b in zip(cumulative, cumulative[1:], strict=False))
    assert all(h <= c for h, c in zip(got["hypervolume"], cumulative, strict=True))


def test_gene_effects_match_grouped_scores(executed, store_home: Home) -> None:
    got = executed["03_gene_effects"][0]
    newest = analysis.list_runs(store_home)["run_id"].tolist()[-1]
    assert got["run_id"] == newest == "random-s0"  # CORAL_RUN_ID unset: the newest run
    data = analysis.load_run(newest, store_home)
    table = data.scores.merge(data.genomes.drop(columns=["generation", "run_id"]), on="genome_id")
    assert got["n"] == len(table) == len(_evaluated(store_home, newest))
    for outcome in ("bugfix", "fixed_at_k"):
        for gene in ("rank", "adapter_type"):
            for level, part in table.groupby(gene):
                key = f"{outcome}|{gene}={level}"
                assert got["group_counts"][key] == len(part)
                assert got["group_means"][key] == pytest.approx(part[outcome].mean())
                low, high = got["group_ci"][key]
                if len(part) >= 2:
                    assert low - 1e-12 <= part[outcome].mean() <= high + 1e-12
        fit = got["regression"][outcome]
        assert fit is not None and set(fit) == set(got["regression_terms"])
        # Standardised regressors: the intercept is the mean outcome, whatever else is in the model.
        assert fit["intercept"] == pytest.approx(table[outcome].mean())
        assert all(se > 0 for se in got["regression_se"][outcome].values())


def _evaluated(home: Home, run_id: str) -> set[tuple[int, str]]:
    """(generation, genome) of every genome evaluation in the run's log (baselines left out)."""
    return {(e.generation, e.data["genome"]) for e in read_events(home.events_dir(run_id))
            if e.type == "job_finished" and e.data["genome"] not in ("baseline", "echo")}


def _cache_from_logs(home: Home, run_id: str) -> tuple[float, float]:
    """(training seconds spent, seconds saved by hits) from the run's own log and checkpoints,
    keyed by the engine's gene_key: an independent path to the notebook's numbers."""
    genomes: dict[str, Genome] = {}
    for path in sorted(home.checkpoints_dir(run_id).glob("gen-*.json")):
        for raw in json.loads(path.read_text(encoding="utf-8"))["population"]:
            genome = Genome.model_validate(raw)
            genomes[genome.id] = genome
    train: dict[str, float] = {}  # gene key -> seconds, from its first generation
    uses: dict[str, set[tuple[int | None, str]]] = {}
    for event in read_events(home.events_dir(run_id)):
        if event.type != "job_finished" or event.data["genome"] not in genomes:
            continue  # the baseline has no genome and trains nothing
        key = gene_key(genomes[event.data["genome"]])
        uses.setdefault(key, set()).add((event.generation, event.data["genome"]))  # every evaluation
        seconds = event.data["timings"].get("train")
        if seconds is not None and key not in train:
            train[key] = seconds
    spent = sum(train.values())
    saved = sum((len(uses[k]) - 1) * train.get(k, 0.0) for k in uses)
    return spent, saved


def test_cache_notebook_matches_engine_counts_and_logs(executed, store_home: Home) -> None:
    got = executed["04_cache_efficiency"][0]
    curve = analysis.cache_curve("evo-s0", store_home)
    assert got["hits"] == curve["cache_hits"].sum() > 0
    assert got["misses"] == curve["cache_misses"].sum()
    assert got["hits_per_generation"] == curve["cache_hits"].tolist()
    assert got["matches_engine"] is True and got["adapters"] == got["misses"]
    spent, saved = _cache_from_logs(store_home, "evo-s0")
    assert got["train_seconds_spent"] == pytest.approx(spent)
    assert got["train_seconds_saved"] == pytest.approx(saved) and saved > 0


def test_compare_notebook_groups_strategies_across_seeds(executed, store_home: Home) -> None:
    got = executed["05_compare_runs"][0]
    assert got["run_ids"] == list(RUNS) and got["config_diff_keys"] == ["seed", "strategy"]
    # Replicates: the two evolution seeds are one group; each other strategy is its own.
    assert sorted(got["replicate_groups"].values()) == [["evo-s0", "evo-s1"], ["grid-s0"], ["random-s0"]]
    best = {}
    for run_id in RUNS:
        curves = analysis.fitness_curves(run_id, ["fitness"], store_home)
        best[run_id] = curves[curves["stat"] == "best"]["value"].max()
    assert got["best_over_run"] == best
    final = analysis.compare_runs(list(RUNS), "fitness", store_home)["final"]
    assert got["final_best"] == dict(zip(final["run_id"], final["best_fitness"], strict=True))
    evo = [best["evo-s0"], best["evo-s1"]]
    mean = sum(evo) / 2
    assert got["strategies"]["evolution"]["n"] == 2
    assert got["strategies"]["evolution"]["mean"] == pytest.approx(mean)
    assert got["strategies"]["evolution"]["se"] == pytest.approx(abs(evo[0] - evo[1]) / 2)
    assert got["strategies"]["grid"] == {"n": 1, "mean": best["grid-s0"], "se": None}
    for other in ("random", "grid"):
        diff = got["evolution_minus"][other]
        assert diff["difference"] == pytest.approx(mean - got["strategies"][other]["mean"])
        assert diff["se"] is None  # one run of the other strategy: no error bar, not a made-up one
    # No pick re-evaluated in this home: none summarised, every run named (tests/analysis/test_reevaluated.py
    # covers the figures).
    assert got["reevaluated"] == {} and got["not_reevaluated"] == list(RUNS)


def test_env_selection_errors_name_the_problem(store_home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORAL_RUN_ID", "nope")
    with pytest.raises(CoralError, match="CORAL_RUN_ID='nope'"):
        run_id_from_env(store_home)
    monkeypatch.setenv("CORAL_RUN_IDS", "grid-s0, evo-s0,grid-s0")
    assert run_ids_from_env(store_home) == ["grid-s0", "evo-s0"]
    monkeypatch.setenv("CORAL_RUN_IDS", "evo-s0,missing")
    with pytest.raises(CoralError, match="'missing'"):
        run_ids_from_env(store_home)
    with pytest.raises(CoralError, match="no runs under"):
        run_id_from_env(Home(store_home.root / "empty"))


def test_notebook_reads_while_the_ingestor_writes_a_live_run(tmp_path: Path) -> None:
    """The dashboard's writer thread holds store.duckdb while a run goes on; a notebook opened
    mid-run reads the snapshot and sees the run as running, with its finished generations."""
    home = Home(tmp_path / "live")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update({"CORAL_HOME": str(home.root), "PYTHONPATH": str(REPO), "CORAL_FAKE_SLEEP": "0.01"})
    log = (tmp_path / "run.log").open("w")
    run = subprocess.Popen(
        [sys.executable, "-m", "coral", "run", str(SMOKE), "--run-id", "live", "--backend", "serial",
         "--handlers", FAKES, "--set", "generations=500", "--set", "population=4"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    ingestor = Ingestor(home, interval=0.3, snapshot_every=1.0).start()  # the dashboard's writer
    try:
        deadline = time.monotonic() + 90
        while not _snapshot_has_generation(home, "live"):
            assert run.poll() is None, f"the run ended early: {(tmp_path / 'run.log').read_text()}"
            assert time.monotonic() < deadline, "no generation reached the snapshot in time"
            time.sleep(0.2)
        cycles_before = ingestor.status.cycles
        ((got,),) = execute_all([(_notebook("01_run_overview"), home.root, {"CORAL_RUN_ID": "live"})])
        assert ingestor.status.cycles > cycles_before  # the writer kept writing meanwhile
        assert run.poll() is None, "the run finished before the notebook was done: not a live read"
    finally:
        os.killpg(run.pid, signal.SIGTERM)  # the process group this test started
        run.wait(timeout=60)
        log.close()
        ingestor.stop()
    assert ingestor.status.last_error is None
    assert got["state"] == "running" and got["generations_done"] >= 1
    # What the notebook saw mid-run is what the store holds for those generations afterwards.
    scores = analysis.load_run("live", home).scores
    seen = rank_best(fitness_by_genome(scores[scores["generation"] < got["generations_done"]]))
    assert (got["best_genome"], got["best_fitness"]) == (seen["genome_id"].iloc[0], seen["fitness"].iloc[0])
    assert got["baseline_fitness"] == analysis.baseline("live", home)["fitness"]


def _snapshot_has_generation(home: Home, run_id: str) -> bool:
    try:
        with analysis.connect(home, source="snapshot") as con:
            return con.execute("SELECT count(*) FROM generations WHERE run_id = ?", [run_id]).fetchone()[0] > 0
    except (CoralError, duckdb.Error):  # no snapshot yet, or one replaced mid-open: look again
        return False



def test_the_readme_run_instructions_work_as_written(store_home: Home, tmp_path: Path) -> None:
    """notebooks/README.md's "Running" commands, run from the repository root as written; only the
    venv's location (.venv here is wherever this interpreter lives), RUN and /tmp/01.ipynb are
    filled in."""
    text = (REPO / "notebooks" / "README.md").read_text()
    block = text.split("## Running", 1)[1].split("```", 2)[1]
    commands = [line.split("  #")[0].strip() for line in block.strip().splitlines()]
    assert len(commands) == 3 and all(".venv/bin/" in c for c in commands)
    venv_bin = str(Path(sys.executable).parent) + "/"
    notebook = tmp_path / "01.ipynb"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update({"CORAL_HOME": str(store_home.root), "PYTHONPATH": str(REPO)})
    for command in commands:
        filled = (command.replace(".venv/bin/", venv_bin).replace("CORAL_RUN_ID=RUN", "CORAL_RUN_ID=evo-s0")
                  .replace("/tmp/01.ipynb", str(notebook)))
        done = subprocess.run(["bash", "-c", filled], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        if "01_run_overview.py" in command and "jupytext" not in command:
            assert "KEY_NUMBERS " in done.stdout  # the script printed its key numbers
    assert "run evo-s0:" in notebook.read_text()  # executed in place: the outputs are in the file
