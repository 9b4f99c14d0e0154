"""Run store benchmark: ingest rate for N synthetic evaluation rows, and query latency at that size.

    python bench/store.py [--rows 1000000] [--runs 10] [--repeats 5]

Synthetic event logs (job_finished + generation_finished, the shapes the engine writes) go into a
temporary CORAL_HOME, in 4 MiB segments like the engine's; the ingestor reads them from the logs as
after a restart. Baselines measured
in the same process: executemany on a 2k-row sample (extrapolated) for ingest, and a pandas
groupby over the raw evaluation rows for the curve query. Ingest is reported in wall time and in
process CPU time (all threads): on a shared machine the second says what the code costs.
Query latencies are medians of --repeats calls after one warm call. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

from coral import analysis
from coral.execution.messages import event_id
from coral.home import Home
from coral.rng import stream
from coral.run.events import SEGMENT_BYTES, segment_name
from coral.store.ingest import Ingestor
from coral.store.schema import METRICS, OBJECTIVES
from coral.store.store import snapshot_path


def write_run(home: Home, run_id: str, generations: int, genomes: int, problems: int) -> int:
    rng = stream(0, "bench-store", None, run_id)
    folder = home.events_dir(run_id)
    folder.mkdir(parents=True)
    (home.run_dir(run_id) / "config.yaml").write_text(f"run_id: {run_id}\nconfig: {{seed: 0}}\n")
    seq, rows, size = 0, 0, 0
    # Segments roll over past SEGMENT_BYTES as EventLog's do: all but the last are sealed.
    with contextlib.ExitStack() as files:
        out = files.enter_context(open(folder / segment_name(0), "w", encoding="utf-8"))

        def emit(type_: str, data: dict, generation: int | None) -> None:
            nonlocal seq, size, out
            if size >= SEGMENT_BYTES:
                files.close()
                out, size = files.enter_context(open(folder / segment_name(seq), "w", encoding="utf-8")), 0
            line = json.dumps({"schema_version": 1, "event_id": event_id(run_id, seq), "run_id": run_id,
                               "seq": seq, "type": type_, "generation": generation, "data": data,
                               "wall_time": 0.0}, separators=(",", ":")) + "\n"
            out.write(line)
            size += len(line)
            seq += 1
        emit("run_started", {"population": genomes, "generations": generations, "seed": 0}, None)
        for g in range(generations):
            ids = [f"g{g:03d}x{i:03d}" for i in range(genomes)]
            emit("generation_started", {"genomes": ids}, g)
            scores = {}
            for genome in ids:
                values = rng.random((problems, len(OBJECTIVES)))
                for p in range(problems):
                    obj = {o: round(float(v), 4) for o, v in zip(OBJECTIVES, values[p], strict=True)}
                    fixed = obj["bugfix"] > 0.5
                    emit("job_finished", {"genome": genome, "problem": f"p{p:03d}", "sample": 0,
                                          "raw": "def f(x):\n    return x\n", "candidate": "def f(x):\n    return x\n",
                                          "cases": [{"case": 0, "passed": fixed, "reason": None, "steps": 3}],
                                          "objectives": obj, "passed_all": fixed,
                                          "timings": {"test": 0.01, "worker": "bench"}}, g)
                    rows += 1
                means = values.mean(axis=0)
                scores[genome] = {**dict(zip(OBJECTIVES, map(float, means), strict=True)),
                                  "fixed_at_k": float(means[0]), "fitness": float(means.mean())}
            best = {m: max(s[m] for s in scores.values()) for m in METRICS}
            mean = {m: sum(s[m] for s in scores.values()) / genomes for m in METRICS}
            emit("generation_finished", {"genomes": scores, "best": best, "mean": mean,
                                         "genotype_diversity": 0.5, "phenotype_diversity": {"distinct": genomes,
                                                                                             "share": 1.0},
                                         "cache": {"hits": 1, "misses": 1, "hit_rate": 0.5},
                                         "gate": {}, "survivors": ids[: genomes // 2]}, g)
        emit("run_finished", {"generations": generations}, None)
    return rows


def executemany_rate(sample: int = 2_000) -> float:
    con = duckdb.connect()
    con.execute(f"CREATE TABLE e (run_id VARCHAR, seq BIGINT, generation INTEGER, genome_id VARCHAR, "
                f"problem VARCHAR, sample INTEGER, {', '.join(f'{o} DOUBLE' for o in OBJECTIVES)}, "
                "fixed BOOLEAN, passed INTEGER, total INTEGER, PRIMARY KEY (run_id, generation, genome_id, "
                "problem, sample))")
    rows = [("r", i, i // 1000, f"g{i // 100}", f"p{i % 100}", 0, 0.1, 0.2, 0.3, 0.4, 0.5, True, 1, 1)
            for i in range(sample)]
    start = time.perf_counter()
    con.executemany(f"INSERT INTO e VALUES ({', '.join('?' * 14)})", rows)
    return sample / (time.perf_counter() - start)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm: the first call opens files and plans
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    genomes, problems = 20, 100
    generations = max(1, args.rows // (args.runs * genomes * problems))
    with tempfile.TemporaryDirectory(prefix="coral-bench-store-") as tmp:
        home = Home(Path(tmp)).ensure()
        start = time.perf_counter()
        rows = sum(write_run(home, f"run{r:02d}", generations, genomes, problems) for r in range(args.runs))
        write_s = time.perf_counter() - start
        os.sync()  # the logs' write-back is the engine's cost, not to be charged to the ingest
        ingestor = Ingestor(home, None)
        start, cpu = time.perf_counter(), time.process_time()
        events = ingestor.run_once(snapshot=False)
        ingest_s, ingest_cpu_s = time.perf_counter() - start, time.process_time() - cpu
        start = time.perf_counter()
        ingestor.snapshot()
        snapshot_s = time.perf_counter() - start
        ingestor.stop()
        baseline_rate = executemany_rate()
        run, gen = "run00", generations // 2
        queries = {
            "list_runs": lambda: analysis.list_runs(home),
            "fitness_curves": lambda: analysis.fitness_curves(run, home=home),
            "diversity_curves": lambda: analysis.diversity_curves(run, home=home),
            "cache_curve": lambda: analysis.cache_curve(run, home=home),
            "baseline": lambda: analysis.baseline(run, home=home),
            "pareto_3d": lambda: analysis.pareto(run, gen, ["bugfix", "style", "syntax"], home=home),
            "genome_detail": lambda: analysis.genome_detail(run, f"g{gen:03d}x000", home=home),
            "compare_runs": lambda: analysis.compare_runs([f"run{r:02d}" for r in range(args.runs)], home=home),
        }
        latency = {name: round(median_ms(fn, args.repeats), 2) for name, fn in queries.items()}
        with duckdb.connect(str(snapshot_path(home)), read_only=True) as con:
            raw = con.execute("SELECT * FROM evaluations WHERE run_id = ?", [run]).df()

        def pandas_curve() -> None:
            per_genome = raw.groupby(["generation", "genome_id"])[list(OBJECTIVES)].mean()
            per_genome.groupby("generation").agg(["max", "mean"])

        pandas_ms = median_ms(pandas_curve, args.repeats)
    rate = rows / ingest_s
    result = {
        "evaluation_rows": rows, "events": events, "write_logs_s": round(write_s, 2),
        "ingest_s": round(ingest_s, 2), "ingest_rows_per_s": round(rate),
        "ingest_cpu_s": round(ingest_cpu_s, 2), "ingest_rows_per_cpu_s": round(rows / ingest_cpu_s),
        "executemany_rows_per_s": round(baseline_rate), "ingest_vs_executemany": round(rate / baseline_rate, 1),
        "snapshot_s": round(snapshot_s, 3), "query_median_ms": latency,
        "pandas_groupby_curve_ms": round(pandas_ms, 2),
        "fitness_curves_vs_pandas_groupby": round(pandas_ms / latency["fitness_curves"], 2),
        "targets": {"ingest_rows_per_s>=100k": rate >= 100_000,
                    "curve_queries<=200ms": all(latency[q] <= 200 for q in
                                                ("fitness_curves", "diversity_curves", "cache_curve"))},
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
