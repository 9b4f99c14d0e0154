"""Shared by the store, ingest and analysis tests: small real runs made by the engine with
stand-in job bodies (coral/testing/fakes.py), once per session."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from coral.home import Home
from coral.run.lifecycle import resolve_config, run_from_config
from coral.services.backends import run_context

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
FAKES = "coral.testing.fakes:HANDLERS"
RUNS = {"alpha": ["generations=3", "population=4"], "beta": ["generations=2", "population=4", "seed=1"]}


@pytest.fixture(scope="session")
def template_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store-template")
    for run_id, overrides in RUNS.items():
        config = resolve_config(SMOKE, overrides, "serial")
        run_from_config(config, run_id, run_context(config, Home(root), handlers=FAKES, threads=1))
    return root


def copy_runs(template: Path, target: Path, runs: list[str] | None = None) -> Home:
    """A fresh home holding the template's run folders (no queue, no store)."""
    for run_id in runs or list(RUNS):
        shutil.copytree(template / "runs" / run_id, target / "runs" / run_id)
    return Home(target)


def log_events(home: Home, run_id: str) -> list[dict]:
    out = []
    for path in sorted(home.events_dir(run_id).glob("*.jsonl")):
        out.extend(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())
    return out


def store_rows(con, run_id: str) -> dict[str, list[tuple]]:
    """Every row of a run, per table, in a canonical order: two stores compare with ==."""
    out = {}
    for table, key in (("events", "seq"), ("jobs", "seq"), ("evaluations", "seq"),
                       ("generations", "generation"), ("scores", "generation, genome_id"),
                       ("genomes", "genome_id"), ("baselines", "seq")):
        rows = con.execute(f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = ? ORDER BY {key}",
                           [run_id]).fetchall()
        out[table] = rows
    return out
