"""The layering of docs/architecture.md is checked, not hoped for: lint-imports passes on the
tree, and fails when a layer rule is broken (an upward import, a cycle, the product importing its
test helpers). The broken trees are copies in a temporary folder; the repository is not touched."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from coral.execution.jobs import Handlers, WorkerContext
from coral.execution.messages import Job
from coral.execution.transport.local import LocalTransport
from coral.execution.workers import execute_job
from coral.home import Home

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT), str(root / "pyproject.toml")], cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("layout")
    shutil.copytree(REPO / "coral", root / "coral", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_repository_keeps_every_contract() -> None:
    out = lint(REPO)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "0 broken" in out.stdout


@pytest.mark.parametrize("module, line, broken", [
    # evolution is pure: importing the run layer is an upward import (and a cycle)
    ("coral/evolution/ca.py", "from coral.run import engine as _up", "layers import downwards"),
    # the product never imports coral.testing
    ("coral/run/registry.py", "from coral.testing import fakes as _t", "never imports its test"),
    # two modules of one layer importing each other
    ("coral/run/checkpoints.py", "from coral.run import registry as _c", "no import cycles"),
    # coral/ never imports Streamlit
    ("coral/analysis/figures.py", "import streamlit as _st", "never imports Streamlit"),
])
def test_a_broken_rule_fails_the_check(tree: Path, module: str, line: str, broken: str) -> None:
    path = tree / module
    original = path.read_text()
    path.write_text(original + f"\n{line}  # noqa: E402\n")
    try:
        out = lint(tree)
    finally:
        path.write_text(original)
    assert out.returncode != 0
    assert next(x for x in out.stdout.splitlines() if broken in x).endswith("BROKEN")


def test_deleting_a_layer_from_the_rules_is_noticed(tree: Path) -> None:
    """With coral.run swapped below coral.execution, the real imports break the contract."""
    config = tree / "pyproject.toml"
    original = config.read_text()
    config.write_text(original.replace('    "coral.run",\n    "coral.execution",\n',
                                       '    "coral.execution",\n    "coral.run",\n'))
    try:
        out = lint(tree)
    finally:
        config.write_text(original)
    assert out.returncode != 0 and "coral.run is not allowed to import coral.execution" in out.stdout


def test_a_result_carries_its_jobs_typed_fields(tmp_path: Path) -> None:
    """Results are routed by fields, so a problem name with ':' cannot misroute one."""
    job = Job(job_id="opaque-1", run_id="r", kind="echo", generation=3, subject="g-abc",
              problem="odd:name:7", sample=2, payload={"x": 1})
    with LocalTransport(tmp_path / "queue.sqlite") as transport:
        ctx = WorkerContext(transport, worker_id="test-worker", home=Home(tmp_path))
        result = execute_job(job, "echo", Handlers.from_spec(None), ctx)
    assert result.ok
    assert (result.generation, result.subject, result.problem, result.sample) == (3, "g-abc", "odd:name:7", 2)
