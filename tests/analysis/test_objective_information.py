"""bench/objective_information.py: constant objectives and copies, read from a real event log."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from coral.run.events import EventLog

BENCH = Path(__file__).resolve().parents[2] / "bench" / "objective_information.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("objective_information", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flags_constant_and_copied_objectives_and_leaves_baselines_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events"
    log = EventLog("r", events)
    items: list[Any] = []
    for generation in range(2):
        for index, genome in enumerate(("g1", "g2", "g3", "baseline", "echo")):
            for problem, offset in (("a", 0.0), ("b", 0.2)):
                bugfix = (index * 0.3 + offset + generation * 0.05) % 1
                items.append(("job_finished", {"genome": genome, "problem": problem, "sample": 0, "objectives": {
                    "bugfix": bugfix, "style": 1 - 0.5 * bugfix,  # a copy (r = -1)
                    "security": 1.0,  # constant over the genomes...
                    "runtime": ((0.5, 0.1, 0.9), (0.2, 0.8, 0.3))[generation][index % 3],  # its own order
                    # ...while the baselines differ: they must not make it look informative
                    "syntax": 0.0 if genome in ("baseline", "echo") else 1.0}}, generation))
    log.emit_many(items)
    assert _load().main(["--events", str(events)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["genome_evaluations"] == 6 and result["candidates"] == 12
    assert result["verdict"] == {"bugfix": "informative", "style": "copy of bugfix", "security": "constant",
                                 "runtime": "informative", "syntax": "constant"}
    assert result["correlation"]["style"]["bugfix"] == pytest.approx(-1.0)
    assert result["correlation"]["security"]["bugfix"] is None  # no r for a constant: null, not NaN


def test_missing_events_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _load().main(["--events", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "nope" in err
