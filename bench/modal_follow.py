"""How quickly the dashboard follows a Modal run, beside a local run measured in the same process.

    python bench/modal_follow.py [--repeats 2] [--config configs/smoke.yaml]

Both runs use the stand-in job bodies (coral.testing.fakes), so what is timed is the path from
the engine to what the Live page reads, not the science:
- modal: the app's orchestrator on the in-process Modal double (coral/modal/offline.py), submitted
  as Launch does (`ModalBackend.submit`); the dashboard's ingestor (`start_ingestor`, following
  the run through the double's API: the live dict, the events partition, the Volume).
- local: the same config launched as the Launch page does (`launch_run`, detached, local workers).
Figures, at the service level (`live_view`, what the Live page reads every second; no browser):
- launch to first point: from the launch call to the first genome point in `live_view`;
- per-genome latency: for each genome point, when `live_view` first showed it minus the time the
  engine recorded its scores (progress.json's `at`). Polled every 50 ms.
Prints a table and one JSON line last. The double runs in this process, so its "network" is free:
against real Modal add the Dict/Queue round trips (tens of ms each).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from coral.config import REPO_ROOT, load_config
from coral.home import Home, new_run_id
from coral.modal.double import ModalDouble
from coral.modal.offline import deploy
from coral.services import backends
from coral.services.backends import config_backend
from coral.services.dashboard import JobBodies, LaunchRequest, launch_run, request_control, start_ingestor
from coral.services.live import live_view

FAKES = "coral.testing.fakes:HANDLERS"
ENDED = ("finished", "stopped", "failed")


def follow(home: Home, run_id: str, started: float, timeout: float = 300.0) -> dict[str, Any]:
    """Poll live_view until the run ends: (first point after launch, per-genome latencies)."""
    seen: dict[tuple[int, str], float] = {}
    latencies: list[float] = []
    first: float | None = None
    deadline = time.time() + timeout
    while time.time() < deadline:
        now = time.time()
        try:
            view = live_view(run_id, home)
        except Exception:  # not registered or not copied yet: keep polling
            time.sleep(0.05)
            continue
        for point in view.genomes:
            key = (int(point["generation"]), str(point["genome"]))
            if key not in seen:
                seen[key] = now
                latencies.append(now - float(point["at"]))
                if first is None:
                    first = now - started
        if view.info.state in ENDED:
            break
        time.sleep(0.05)
    return {"first_point_s": first, "latencies": latencies, "state": view.info.state}


def modal_run(config_path: Path, root: Path) -> dict[str, Any]:
    api = ModalDouble(volume_root=root / "volumes")
    deploy(api, load_config(config_path, ["backend.kind=modal"]), bodies=JobBodies(FAKES), preload=False,
           network_blocked=True, scaledown_window=0.5)
    backends.MODAL_API = api
    home = Home(root / "laptop").ensure()
    ingestor = start_ingestor(home)
    try:
        run_id = new_run_id()
        started = time.time()
        config_backend(load_config(config_path, ["backend.kind=modal"])).submit(
            config_path, ["backend.kind=modal"], run_id, home)
        return follow(home, run_id, started)
    finally:
        ingestor.stop()
        backends.MODAL_API = None


def local_run(config_path: Path, root: Path) -> dict[str, Any]:
    home = Home(root / "local").ensure()
    ingestor = start_ingestor(home)
    try:
        request = LaunchRequest.from_config(config_path).with_values(backend="local", workers=2)
        started = time.time()
        run_id = launch_run(request.with_values(bodies=JobBodies(FAKES)), home)
        result = follow(home, run_id, started)
        if result["state"] not in ENDED:
            request_control(run_id, "stop", home)
        return result
    finally:
        ingestor.stop()


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    lat = sorted(x for r in results for x in r["latencies"])
    firsts = [r["first_point_s"] for r in results if r["first_point_s"] is not None]
    return {"runs": len(results), "states": [r["state"] for r in results],
            "first_point_s": round(statistics.median(firsts), 2) if firsts else None,
            "genome_points": len(lat),
            "latency_median_s": round(statistics.median(lat), 3) if lat else None,
            "latency_p90_s": round(lat[int(0.9 * (len(lat) - 1))], 3) if lat else None,
            "latency_max_s": round(lat[-1], 3) if lat else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "configs" / "smoke.yaml")
    args = parser.parse_args()
    config_path = args.config.resolve()
    with tempfile.TemporaryDirectory(prefix="coral-bench-follow-") as tmp:
        os.environ["CORAL_HOME"] = str(Path(tmp) / "home")
        out: dict[str, list[dict[str, Any]]] = {"local": [], "modal": []}
        for i in range(args.repeats):
            out["local"].append(local_run(config_path, Path(tmp) / f"local-{i}"))
            out["modal"].append(modal_run(config_path, Path(tmp) / f"modal-{i}"))
    table = {kind: summary(results) for kind, results in out.items()}
    print(f"{'backend':8} {'runs':>4} {'first point s':>14} {'points':>7} {'median s':>9} {'p90 s':>7} {'max s':>7}")
    for kind, row in table.items():
        print(f"{kind:8} {row['runs']:>4} {row['first_point_s']!s:>14} {row['genome_points']:>7} "
              f"{row['latency_median_s']!s:>9} {row['latency_p90_s']!s:>7} {row['latency_max_s']!s:>7}")
    load = os.getloadavg()
    print(json.dumps({"config": str(config_path), "load_average": [round(x, 2) for x in load], **table}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
