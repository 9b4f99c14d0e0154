"""`coral validate` on every backend: serial, local worker processes and the modal backend on the
Modal double must agree event for event; a difference is named by its first event."""

from __future__ import annotations

from pathlib import Path

from coral.config import REPO_ROOT
from coral.home import Home
from coral.modal.validate import first_difference, validate_everywhere
from coral.run.lifecycle import run_from_config

FAKES = "coral.testing.fakes:HANDLERS"
SMOKE = REPO_ROOT / "configs" / "smoke.yaml"


def test_serial_local_and_modal_double_are_identical(tmp_path: Path) -> None:
    report = validate_everywhere(SMOKE, [], 2, home=Home(tmp_path / "home"), handlers=FAKES)
    assert report["modal"]["state"] == "finished"
    assert report["identical_to_serial"] == {
        side: {"populations": True, "scores": True, "event_ids": True, "events": True}
        for side in ("queue", "modal")}
    assert report["first_difference"] == {"queue": None, "modal": None}


def test_the_first_differing_event_is_named(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    for seed in (0, 1):
        run_from_config(SMOKE, f"seed{seed}0000000", "serial", overrides=[f"seed={seed}"],
                        home=home, handlers=FAKES)
    where = first_difference(home, "seed00000000", "seed10000000")
    assert where is not None and where.startswith("event ") and "differs" in where
    assert first_difference(home, "seed00000000", "seed00000000") is None
