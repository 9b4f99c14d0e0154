"""Orchestration cost against run size: `coral run` with stand-in job bodies, so only the engine,
the executor, the workers, the queue, the event log and the progress record are measured.

    python bench/scale.py [--sizes 10,40,200,1000] [--samples 1,5] [--generations 2]
                          [--baseline-tree DIR] [--budget SECONDS]

Each (population, samples) is one `coral run configs/local.yaml --handlers
coral.testing.fakes:HANDLERS` (2 local workers, the 186 held-out instances of data/mutants) in a
fresh CORAL_HOME. Per size it prints: wall per generation (progress.json, generation start to
end), jobs per generation and jobs/s, ms per job, the engine's peak RSS (VmHWM, polled) and its
RSS at the end of each generation (should not grow with the jobs already finished), the event
log's bytes, and the store's ingest time for the run's log (an in-memory DuckDB, from the logs).
Run start-up (benchmark load, initial population) is reported apart from the generations.

`--baseline-tree DIR`: a checkout of the code before this change (e.g. `git archive BASE | tar -x
-C DIR`); it runs `--baseline-size` (40) for `--baseline-generations` (1), then this tree runs the
same, in the same invocation, and the throughput ratio is printed. Sizes whose estimated time
exceeds `--budget` are left out and said so. The load average is printed with every figure (the
machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "local.yaml"
EVAL_INSTANCES = 186  # data/mutants' held-out family instances
SPLIT = REPO / "data" / "mutants" / "split.json"


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _kib(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def run_size(population: int, samples: int, generations: int, code: Path, timeout: float) -> dict[str, Any]:
    """One run; its figures (or its failure) as a dict."""
    with tempfile.TemporaryDirectory(prefix="coral-bench-scale-") as folder:
        home = Path(folder) / "home"
        run_id = f"scale-{population}-{samples}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
        env.update({"CORAL_HOME": str(home), "PYTHONPATH": str(code)})
        cmd = [sys.executable, "-m", "coral", "run", str(CONFIG), "--run-id", run_id,
               "--handlers", "coral.testing.fakes:HANDLERS", "--set", f"population={population}",
               "--set", f"generations={generations}", "--set", "evolution.final_rounds=0",  # search only
               "--set", f"benchmark.samples={samples}",
               "--set", f"benchmark.split={SPLIT}"]  # every held-out instance, not local.yaml's 38
        load_before = load()
        started = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=code, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        peak, rss_at_end, seen = 0, [], 0
        progress_file = home / "runs" / run_id / "progress.json"
        try:
            while proc.poll() is None:
                if time.monotonic() - started > timeout:
                    proc.kill()
                    proc.wait()
                    return {"population": population, "samples": samples, "error": f"over {timeout:.0f}s",
                            "load": load_before}
                peak = max(peak, _kib(proc.pid, "VmHWM") or 0)
                try:
                    done = len(json.loads(progress_file.read_text()).get("finished", []))
                except (FileNotFoundError, json.JSONDecodeError):
                    done = seen
                if done > seen:  # a generation just ended: the engine's memory now
                    rss_at_end.append((_kib(proc.pid, "VmRSS") or 0) / 1024)
                    seen = done
                time.sleep(0.1)
            out = proc.communicate()[0]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        wall = time.monotonic() - started
        if proc.returncode != 0:
            return {"population": population, "samples": samples,
                    "error": out.strip().splitlines()[-1] if out.strip() else f"exit {proc.returncode}",
                    "load": load_before}
        progress = json.loads(progress_file.read_text())
        gens = progress["finished"]
        events = home / "runs" / run_id / "events"
        log_bytes = sum(p.stat().st_size for p in events.glob("*.jsonl"))
        try:
            ingest: float | str = ingest_seconds(home, code)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            ingest = str(exc)  # the run's figures still count
        jobs = [sum(g["jobs"].values()) for g in gens]
        seconds = [g["seconds"] for g in gens]
        return {
            "population": population, "samples": samples, "generations": len(gens),
            "wall_per_generation_s": [round(s, 2) for s in seconds], "jobs_per_generation": jobs,
            "jobs_per_s": round(sum(jobs) / sum(seconds), 1),
            "ms_per_job": round(1000 * sum(seconds) / sum(jobs), 3),
            "startup_s": round(wall - sum(seconds), 1), "run_wall_s": round(wall, 1),
            "engine_peak_rss_mb": round(peak / 1024, 1),
            "engine_rss_at_generation_end_mb": [round(r, 1) for r in rss_at_end],
            "event_log_bytes": log_bytes, "ingest_s": ingest, "load_before": load_before,
            "load_after": load(),
        }


def ingest_seconds(home: Path, code: Path) -> float:
    """The store's ingest of the run's log (in-memory DuckDB), in a child on the same code."""
    script = ("import sys,time;from coral.home import Home;from coral.store.ingest import Ingestor\n"
              "i=Ingestor(Home(sys.argv[1]),transport_kind=None,db_path=':memory:')\n"
              "t=time.perf_counter();n=i.run_once(snapshot=False);print('INGEST',time.perf_counter()-t,n)")
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run([sys.executable, "-c", script, str(home)], env=env, capture_output=True,
                          text=True, timeout=1800)
    # DuckDB may draw a progress bar on stdout: take the marked line.
    line = next((x for x in done.stdout.splitlines() if x.startswith("INGEST ")), None)
    if done.returncode != 0 or line is None:
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise RuntimeError(f"ingest failed: {last}")
    return round(float(line.split()[1]), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,40,200,1000")
    parser.add_argument("--samples", default="1,5")
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument("--baseline-tree", type=Path, default=None)
    parser.add_argument("--baseline-size", type=int, default=40, help="population of the baseline run")
    parser.add_argument("--baseline-generations", type=int, default=1)
    parser.add_argument("--budget", type=float, default=900.0, help="seconds one size may take")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    samples = [int(x) for x in args.samples.split(",")]
    print(f"# bench/scale.py on {os.cpu_count()} cores, load {load()}, {time.strftime('%Y-%m-%d %H:%M %Z')}",
          flush=True)
    rows: list[dict[str, Any]] = []
    rate: float | None = None  # jobs/s measured so far, to skip sizes that cannot fit the budget
    for k in samples:
        for population in sizes:
            jobs = args.generations * (population + 2) * EVAL_INSTANCES * k
            if rate is not None and jobs / rate > args.budget:
                print(json.dumps({"population": population, "samples": k, "skipped":
                                  f"~{jobs:,} jobs at {rate:.0f}/s exceed the {args.budget:.0f}s budget"}),
                      flush=True)
                continue
            row = run_size(population, k, args.generations, REPO, 2 * args.budget)
            rows.append(row)
            if "jobs_per_s" in row:
                rate = row["jobs_per_s"]
            print(json.dumps(row), flush=True)
    ok = [r for r in rows if "ms_per_job" in r]
    if len(ok) > 1:
        per_job = [r["ms_per_job"] for r in ok]
        print(json.dumps({"ms_per_job_largest_over_smallest": round(ok[-1]["ms_per_job"] / ok[0]["ms_per_job"], 2),
                          "ms_per_job_max_over_min": round(max(per_job) / min(per_job), 2)}), flush=True)
    if args.baseline_tree is not None:
        size, gens = args.baseline_size, args.baseline_generations
        base = run_size(size, 1, gens, args.baseline_tree, 2 * args.budget)
        print(json.dumps({"baseline": str(args.baseline_tree), **base}), flush=True)
        if "jobs_per_s" in base:
            ours = run_size(size, 1, gens, REPO, 2 * args.budget)
            print(json.dumps({"again": "this tree", **ours}), flush=True)
            print(json.dumps({"throughput_ratio_this_over_baseline":
                              round(ours["jobs_per_s"] / base["jobs_per_s"], 2), "load": load()}), flush=True)


if __name__ == "__main__":
    main()
