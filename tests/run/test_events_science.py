"""What two runs of one config must agree on: no timings, no measured per-case cost."""

from __future__ import annotations

from coral.execution.messages import Event
from coral.run.events import science


def job(cost: int, passed: bool = True, runtime: float = 0.1) -> Event:
    return Event(event_id="r:00000001", run_id="r", seq=1, type="job_finished", generation=0,
                 data={"genome": "g", "cases": [{"case": "c0", "passed": passed, "reason": None,
                                                 "cost": cost}], "timings": {"test": runtime}})


def test_measured_cost_and_timings_are_not_science_but_verdicts_are() -> None:
    assert science(job(1000, runtime=0.1)) == science(job(1900, runtime=9.0))
    assert science(job(1000)) != science(job(1000, passed=False))
    assert "cost" not in science(job(5))["data"]["cases"][0]
