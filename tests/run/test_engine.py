"""The engine's logic with stand-in job bodies (coral/testing/fakes.py): fast and exact.

Serial vs queue equivalence, crash + resume, cache-hit accounting, stop, strategies, the event
log's recovery. The real bodies run once, in tests/cli/test_cli_run.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coral.config import Config, load_config
from coral.evolution.selection import Evolution
from coral.home import Home
from coral.run import checkpoints as ckpt
from coral.run.events import EventLog, read_events, truncate
from coral.run.lifecycle import RunResult, resolve_config, run_from_config
from coral.run.registry import compare_runs, run_science, run_status
from coral.services.backends import run_context

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"
FAKES = "coral.testing.fakes:HANDLERS"


def serial(source: Config | Path, run_id: str, threads: int | None = None) -> RunResult:
    """A run of `source` on the serial backend with the stand-in job bodies."""
    config = resolve_config(source, backend="serial")
    return run_from_config(config, run_id, run_context(config, handlers=FAKES, threads=threads))


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update({"CORAL_HOME": str(home), "PYTHONPATH": str(REPO), **extra})
    return env


def _spawn(home: Path, *args: str, **extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "coral", *args], cwd=REPO, env=_env(home, **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _wait_for(predicate, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


@pytest.mark.slow
def test_serial_and_queue_runs_are_identical() -> None:
    home = Home()
    serial(SMOKE, "serial", threads=1)
    queue = resolve_config(SMOKE, backend="local", workers=2)
    run_from_config(queue, "queue", run_context(queue, handlers=FAKES, threads=1))
    same = compare_runs(home, "serial", "queue")
    assert same == {"populations": True, "scores": True, "event_ids": True, "events": True}
    science = run_science(home, "queue")
    assert len(science["populations"]) == 2 and len(science["populations"][0]) == 4
    types = science["event_types"]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.count("baseline_finished") == 1
    assert types.count("generation_finished") == 2
    # A changed seed must change the results, or the comparison above proves nothing.
    serial(load_config(SMOKE, ["seed=1"]), "seed1")
    assert not compare_runs(home, "serial", "seed1")["populations"]


def test_generation_event_content() -> None:
    serial(SMOKE, "r")
    events = list(read_events(Home().events_dir("r")))
    assert [e.seq for e in events] == list(range(len(events)))
    assert all(e.event_id == f"r:{e.seq:08d}" for e in events)
    gen0 = [e for e in events if e.type == "job_finished" and e.generation == 0]
    keys = [(e.data["genome"], e.data["problem"], e.data["sample"]) for e in gen0]
    genomes = [k for k in keys if k[0] not in ("baseline", "echo")]
    assert genomes == sorted(genomes)  # canonical order, not completion order
    finished = next(e for e in events if e.type == "generation_finished")
    for field in ("best", "mean", "genotype_diversity", "phenotype_diversity", "cache", "gate"):
        assert field in finished.data
    assert set(finished.data["best"]) >= {"bugfix", "style", "security", "runtime", "syntax",
                                          "fixed_at_k", "fitness"}
    baseline = next(e for e in events if e.type == "baseline_finished")
    assert baseline.data["greedy"] is False and "objectives" in baseline.data["echo"]


def test_noise_control_baselines_and_summary() -> None:
    """Common random numbers within a generation, survivors evaluated again on the next
    generation's seed with averaged scores and counts, both baselines at the genomes' sample
    count and seed, and a summary naming the baselines and any constant objective."""
    config = load_config(SMOKE, ["generations=3", "benchmark.samples=2"])
    serial(config, "noise")
    events = list(read_events(Home().events_dir("noise")))
    jobs = [e for e in events if e.type == "job_finished"]
    # fake_generate writes the seed into each answer: one seed per generation, for every genome
    # and the no-adapter baseline; another seed in the next generation.
    seeds = {g: {j.data["raw"].split("|")[1] for j in jobs if j.generation == g
                 and j.data["genome"] != "echo"} for g in range(3)}
    assert all(len(v) == 1 for v in seeds.values()) and len(set.union(*seeds.values())) == 3
    assert {j.data["sample"] for j in jobs if j.data["genome"] == "baseline"} == {0, 1}
    finished = {e.generation: e.data for e in events if e.type == "generation_finished"}
    survivors0 = finished[0]["survivors"]
    started1 = next(e.data for e in events if e.type == "generation_started" and e.generation == 1)
    assert finished[1]["reevaluated"] == [i for i in survivors0 if i not in started1["genomes"]]
    assert set(finished[1]["genomes"]) == set(started1["genomes"]) | set(survivors0)
    for genome_id in survivors0:
        assert finished[1]["evaluations"][genome_id] == 2
        # The mean of its two evaluations, each the genome's mean over its own test jobs.
        per_gen = []
        for g in (0, 1):
            mine = [j.data["objectives"]["bugfix"] for j in jobs
                    if j.generation == g and j.data["genome"] == genome_id]
            per_gen.append(sum(mine) / len(mine))
        assert finished[1]["genomes"][genome_id]["bugfix"] == pytest.approx(sum(per_gen) / 2)
    new = [i for i in finished[1]["genomes"] if i not in survivors0]
    assert new and all(finished[1]["evaluations"][i] == 1 for i in new)
    baseline = next(e for e in events if e.type == "baseline_finished").data
    assert baseline["samples"] == 2 and baseline["echo"]["samples"] == 1
    summary = events[-1].data["summary"]
    assert summary["baselines"]["baseline"] == baseline["objectives"]
    assert summary["baselines"]["echo"] == baseline["echo"]["objectives"]
    # The fake tester gates style, security and runtime on passing: never constant here, but
    # syntax is drawn per answer, so the constant list must be computed, not assumed.
    values = {n: {j.data["objectives"][n] for j in jobs if j.data["genome"] not in ("baseline", "echo")}
              for n in ("bugfix", "style", "security", "runtime", "syntax")}
    assert summary["no_information"] == [n for n, v in values.items() if len(v) == 1]
    assert all(v["evaluations"] >= 1 for v in summary["survivors"].values())


def test_same_heavy_genes_is_a_counted_cache_hit(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Evolution.initial_population

    def twins(self: Evolution):
        population = original(self)
        twin = population[0].model_copy(update={"knobs": population[0].knobs.model_copy(
            update={"temperature": 0.9123})})
        assert twin.id != population[0].id and twin.genes == population[0].genes
        return [population[0], twin, *population[2:]]

    monkeypatch.setattr(Evolution, "initial_population", twins)
    serial(SMOKE, "twins")
    events = list(read_events(Home().events_dir("twins")))
    gen0 = next(e for e in events if e.type == "generation_finished" and e.generation == 0)
    population = ckpt.latest(Home().checkpoints_dir("twins")).population
    first = next(p for p in ckpt_points("twins") if p.generation == 0).population
    distinct = len({g.genes for g in first})
    assert population and distinct <= 3
    assert gen0.data["cache"]["misses"] == distinct  # one train job per distinct gene set
    assert gen0.data["cache"]["hits"] == 4 - distinct >= 1


def ckpt_points(run_id: str) -> list[ckpt.Checkpoint]:
    folder = Home().checkpoints_dir(run_id)
    return [ckpt.Checkpoint.from_json(json.loads(p.read_text())) for p in sorted(folder.glob("gen-*"))]


def test_random_and_grid_strategies_run(tmp_path: Path) -> None:
    home = Home()
    for strategy in ("random", "grid"):
        result = serial(load_config(SMOKE, [f"strategy={strategy}"]), strategy)
        assert result.state == "finished"
        started = next(read_events(home.events_dir(strategy)))
        assert started.data["strategy"] == strategy
    assert run_science(home, "random")["populations"] != run_science(home, "grid")["populations"]


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted(tmp_path: Path) -> None:
    home_dir = Path(os.environ["CORAL_HOME"])
    config = ["--set", "generations=2", "--handlers", FAKES, "--workers", "2"]
    ref = _spawn(home_dir, "run", str(SMOKE), "--run-id", "ref", *config)
    assert ref.wait(timeout=120) == 0, ref.stdout.read()
    victim = _spawn(home_dir, "run", str(SMOKE), "--run-id", "victim", *config,
                    CORAL_FAKE_SLEEP="0.05")
    checkpoints = Home().checkpoints_dir("victim")
    _wait_for(lambda: (checkpoints / "gen-00000.json").exists())
    os.killpg(victim.pid, signal.SIGKILL)  # orchestrator and its workers: a machine crash
    victim.wait(timeout=30)
    assert not (checkpoints / "gen-00001.json").exists()
    assert run_status(Home(), "victim")["state"] == "interrupted"
    resumed = subprocess.run([sys.executable, "-m", "coral", "resume", "victim"], cwd=REPO,
                             env=_env(home_dir), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[0] == "victim"
    same = compare_runs(Home(), "ref", "victim")
    assert same == {"populations": True, "scores": True, "event_ids": True, "events": True}
    assert run_status(Home(), "victim")["state"] == "finished"


@pytest.mark.slow
def test_stop_request_ends_run_between_jobs(tmp_path: Path) -> None:
    home_dir = Path(os.environ["CORAL_HOME"])
    proc = _spawn(home_dir, "run", str(SMOKE), "--run-id", "halt", "--handlers", FAKES,
                  "--workers", "2", "--set", "generations=5", CORAL_FAKE_SLEEP="0.15")  # stop lands under load
    checkpoints = Home().checkpoints_dir("halt")
    _wait_for(lambda: (checkpoints / "gen-00000.json").exists())
    stop = subprocess.run([sys.executable, "-m", "coral", "stop", "halt"], cwd=REPO,
                          env=_env(home_dir), capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0, stop.stderr
    assert proc.wait(timeout=60) == 3
    status = run_status(Home(), "halt")
    assert status["state"] == "stopped"
    events = list(read_events(Home().events_dir("halt")))  # every line parses: nothing torn
    assert events[-1].type == "run_stopped"
    assert [e.seq for e in events] == list(range(len(events)))
    last = ckpt.latest(checkpoints)
    assert last is not None and last.generation < 4
    assert last.next_seq <= events[-1].seq  # the checkpoint never runs ahead of the log
    assert not list(checkpoints.glob(".*"))  # no temp file left behind


def test_event_log_truncates_torn_and_future_lines(tmp_path: Path) -> None:
    log = EventLog("t", tmp_path / "events")
    log.emit_many([("run_started", {}, None), ("generation_started", {}, 0),
                   ("generation_finished", {}, 0)])
    segment = next((tmp_path / "events").iterdir())
    with open(segment, "a") as handle:
        handle.write('{"schema_version": 1, "event_id": "t:0000')  # a crash mid-line
    assert [e.seq for e in read_events(tmp_path / "events")] == [0, 1, 2]
    assert truncate(tmp_path / "events", 2) == 2  # seq 2 and the torn line
    resumed = EventLog("t", tmp_path / "events", start_seq=2)
    resumed.emit("generation_finished", {"again": True}, 0)
    events = list(read_events(tmp_path / "events"))
    assert [e.seq for e in events] == [0, 1, 2] and events[2].data == {"again": True}


def test_checkpoint_is_written_atomically(tmp_path: Path) -> None:
    point = ckpt.Checkpoint(generation=3, population=[], scores={}, next_population=[],
                            evolution={"survivors": []}, next_seq=7)
    ckpt.save(tmp_path, point)
    (tmp_path / "gen-00002.json").write_text(json.dumps(point.to_json() | {"generation": 2}))
    assert ckpt.latest(tmp_path).generation == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_analysis_reads_both_baselines_and_evaluation_counts() -> None:
    from coral import analysis

    serial(SMOKE, "seen")
    events = list(read_events(Home().events_dir("seen")))
    recorded = next(e.data for e in events if e.type == "baseline_finished")
    both = analysis.baselines("seen")
    assert both["echo"] == recorded["echo"]
    assert both["baseline"]["objectives"] == recorded["objectives"]
    counts = analysis.evaluation_counts("seen")
    last = next(e.data for e in reversed(events) if e.type == "generation_finished")
    assert dict(zip(counts[counts.generation == 1].genome_id, counts[counts.generation == 1].evaluations,
                    strict=True)) == last["evaluations"]
    assert analysis.mean_se([0.0, 1.0]) == (0.5, 0.5)


def _check_without_syntax(job, ctx):  # a --handlers test body whose output lacks an objective
    from coral.testing.fakes import fake_check

    out = fake_check(job, ctx).model_dump(mode="json")
    del out["objectives"]["syntax"]
    return out


LACKING = {"train": "coral.testing.fakes:fake_train", "generate": "coral.testing.fakes:fake_generate",
           "test": _check_without_syntax}


def test_an_output_the_engine_cannot_read_fails_the_run_naming_job_and_field() -> None:
    from coral.errors import CoralError

    with pytest.raises(CoralError) as err:
        config = resolve_config(SMOKE, backend="serial")
        run_from_config(config, "lacking", run_context(config, handlers="tests.run.test_engine:LACKING"))
    message = str(err.value)
    assert "\n" not in message and "test job g0000:test:" in message
    assert message.endswith("output field 'objectives': lacks objective 'syntax'")
    assert run_status(Home(), "lacking")["state"] == "failed"


def test_final_rounds_evaluate_the_survivors_again_and_the_best_is_one_of_them() -> None:
    """evolution.final_rounds: the last generations breed nothing and train nothing; each
    evaluates exactly the previous generation's survivors again, their counts grow by one, and
    the run's best is one of the genomes the last round evaluated (not an earlier, stale mean)."""
    from coral.analysis.best import best_genome, genome_fitness

    # A gate rising to 1.0 (min_survivors 1) would prune the finalists to one: the rounds keep them all.
    config = load_config(SMOKE, ["generations=4", "evolution.final_rounds=2", "benchmark.samples=2",
                                 "evolution.gate.schedule=linear", "evolution.gate.end=1.0",
                                 "evolution.gate.min_survivors=1"])
    serial(config, "rounds")
    events = list(read_events(Home().events_dir("rounds")))
    started = {e.generation: e.data for e in events if e.type == "generation_started"}
    finished = {e.generation: e.data for e in events if e.type == "generation_finished"}
    assert [started[g]["final_round"] for g in range(4)] == [False, False, True, True]
    assert started[1]["genomes"] and started[2]["genomes"] == started[3]["genomes"] == []
    trains = [e for e in events if e.type == "job_finished" and e.generation >= 2 and ":train:" in str(e.data)]
    assert not trains
    assert len(finished[1]["survivors"]) >= 2
    for g in (2, 3):
        assert finished[g]["cache"]["misses"] == 0
        assert finished[g]["gate"]["gate_threshold"] is None
        assert set(finished[g]["genomes"]) == set(finished[g]["survivors"]) == set(finished[g]["reevaluated"]) \
            == set(finished[1]["survivors"])
        for genome_id in finished[g]["genomes"]:
            before = finished[g - 1]["evaluations"][genome_id]
            assert finished[g]["evaluations"][genome_id] == before + 1
    best = best_genome("rounds")
    assert best["genome_id"] in finished[3]["genomes"] and best["generation"] == 3
    last = {i: s["fitness"] for i, s in finished[3]["genomes"].items() if finished[3]["evaluations"][i] >= 2}
    assert best["fitness"] == pytest.approx(max(last.values()))
    # The run as it stood before its final rounds: counts and means of generation 1.
    before = genome_fitness("rounds", until=1).set_index("genome_id")
    assert before["generation"].max() == 1
    for genome_id, count in finished[1]["evaluations"].items():
        assert before.loc[genome_id, "evaluations"] == count
        assert before.loc[genome_id, "fitness"] == pytest.approx(finished[1]["genomes"][genome_id]["fitness"])
    assert best_genome("rounds", until=1)["generation"] == 1


def test_a_run_resumed_in_its_final_rounds_matches_one_never_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    from coral.run.engine import EvolutionEngine
    from coral.run.lifecycle import resume_run

    config = load_config(SMOKE, ["generations=3", "evolution.final_rounds=1"])
    serial(config, "whole")
    original = EvolutionEngine._generation

    def crash_in_the_final_round(self, evo, generation, population):
        if generation == 2:
            raise RuntimeError("the machine went away")
        return original(self, evo, generation, population)

    monkeypatch.setattr(EvolutionEngine, "_generation", crash_in_the_final_round)
    with pytest.raises(RuntimeError):
        serial(config, "cut")
    assert ckpt.latest(Home().checkpoints_dir("cut")).next_population == []
    monkeypatch.setattr(EvolutionEngine, "_generation", original)
    # The RuntimeError stands for a crash: the status still says running, its orchestrator gone.
    resumed = resume_run("cut", run_context(resolve_config(config, backend="serial"), handlers=FAKES),
                         orphaned=True)
    assert resumed.state == "finished"
    assert compare_runs(Home(), "whole", "cut") == {"populations": True, "scores": True, "event_ids": True,
                                                     "events": True}


def test_final_rounds_must_leave_a_generation_to_search() -> None:
    from coral.errors import ConfigError

    with pytest.raises(ConfigError, match=r"evolution.final_rounds: 2 leaves no generation to search in"):
        load_config(SMOKE, ["generations=2", "evolution.final_rounds=2"])


def test_fix_chance_comes_from_the_generate_job_and_can_be_selected_on() -> None:
    """fix_chance is one number per (genome, eval problem) from the generate job: every sample of
    that problem carries it, the genome's value is its mean over problems, echo's is 0, and with
    only it weighted, selection keeps the genomes with the highest fix_chance."""
    config = load_config(SMOKE, ["generations=2", "benchmark.samples=2", "objectives.weights.bugfix=0",
                                 "objectives.weights.style=0", "objectives.weights.security=0",
                                 "objectives.weights.runtime=0", "objectives.weights.syntax=0",
                                 "objectives.weights.fix_chance=1"])
    serial(config, "fc")
    events = list(read_events(Home().events_dir("fc")))
    jobs = [e for e in events if e.type == "job_finished"]
    per_problem: dict[tuple[int, str, str], set[float]] = {}
    for j in jobs:
        per_problem.setdefault((j.generation, j.data["genome"], j.data["problem"]), set()).add(
            j.data["objectives"]["fix_chance"])
    assert all(len(v) == 1 for v in per_problem.values())  # the samples of a problem share it
    assert {v for (_, g, _), s in per_problem.items() if g == "echo" for v in s} == {0.0}
    assert {v for (_, g, _), s in per_problem.items() if g == "baseline" for v in s} - {0.0}
    finished = {e.generation: e.data for e in events if e.type == "generation_finished"}
    for genome_id, scores in finished[0]["genomes"].items():
        mine = [next(iter(s)) for (g, i, _), s in per_problem.items() if g == 0 and i == genome_id]
        assert scores["fix_chance"] == pytest.approx(sum(mine) / len(mine))
        assert scores["fitness"] == pytest.approx(scores["fix_chance"])
    # no sampling noise: a survivor evaluated again keeps exactly its fix_chance
    for genome_id in finished[1]["reevaluated"]:
        assert finished[1]["genomes"][genome_id]["fix_chance"] == finished[0]["genomes"][genome_id]["fix_chance"]
    pool = finished[1]["genomes"]  # the new genomes and the survivors evaluated again
    assert len(pool) > config.population
    ranked = sorted(pool, key=lambda i: -pool[i]["fix_chance"])
    assert set(finished[1]["survivors"]) == set(ranked[:config.population])
