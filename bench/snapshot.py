"""Store snapshot cost: the copy made by `cp` in a child process (what Store.snapshot does, so the
writer process never opens or closes store.duckdb and keeps DuckDB's POSIX lock) against the old
in-process copy (shutil.copyfile, which dropped that lock at the first snapshot).

    python bench/snapshot.py [--rows 1000000] [--runs 10] [--repeats 7]

Builds a store of --rows synthetic evaluation rows (bench/store.py's logs), then times each way
--repeats times after one warm call (CHECKPOINT + copy + rename each time) and, after each way,
whether another process can still open the store (it must not: the writer's lock). Prints JSON:
medians in ms and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store import write_run  # bench/store.py, beside this file

from coral.home import Home
from coral.store.ingest import Ingestor

PROBE = ("import duckdb, sys\ntry:\n    duckdb.connect(sys.argv[1], read_only=True)\n"
         "except duckdb.Error:\n    sys.exit(1)\n")


def in_process_copy(ingestor: Ingestor) -> None:
    """The snapshot as it was: CHECKPOINT, then a copy made in the writer process."""
    store, target = ingestor.store, ingestor.snapshot_target
    store.con.execute("CHECKPOINT")
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    shutil.copyfile(store.path, temp)
    shutil.copymode(store.path, temp)
    os.replace(temp, target)


def lock_held(path: str) -> bool:
    """Whether another process is refused the store (the writer's lock is in force)."""
    return subprocess.run([sys.executable, "-c", PROBE, path], check=False).returncode != 0


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    genomes, problems = 20, 100
    generations = max(1, args.rows // (args.runs * genomes * problems))
    with tempfile.TemporaryDirectory(prefix="coral-bench-snapshot-") as tmp:
        home = Home(Path(tmp)).ensure()
        rows = sum(write_run(home, f"run{r:02d}", generations, genomes, problems) for r in range(args.runs))
        ingestor = Ingestor(home, None)
        ingestor.run_once(snapshot=False)
        child_ms = median_ms(ingestor.snapshot, args.repeats)
        child_lock = lock_held(ingestor.store.path)
        size = os.path.getsize(ingestor.store.path)  # after a CHECKPOINT: the whole store
        inproc_ms = median_ms(lambda: in_process_copy(ingestor), args.repeats)
        inproc_lock = lock_held(ingestor.store.path)
        ingestor.stop()
    print(json.dumps({
        "rows": rows, "store_mb": round(size / 2**20, 1), "repeats": args.repeats,
        "cp_child_ms": round(child_ms, 1), "in_process_copy_ms": round(inproc_ms, 1),
        "ratio_cp_child_over_in_process": round(child_ms / inproc_ms, 2),
        "lock_held_after_cp_child": child_lock, "lock_held_after_in_process_copy": inproc_lock,
        "load_average": os.getloadavg()[0], "cpus": os.cpu_count(),
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
