"""Test-only job handlers, loaded in worker processes with --handlers coral.testing.handlers:HANDLERS.

- test: echo, or raise ValueError(payload["raise"]) when given: a job that fails.
- train: the adapter claim with a body that records which process trained (one line per
  training, in payload["record"]) and sleeps payload["train_s"] inside the claim.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from coral.execution.jobs import WorkerContext, echo
from coral.execution.messages import Job


def fail_or_echo(job: Job, ctx: WorkerContext) -> dict[str, Any]:
    if "raise" in job.payload:
        raise ValueError(job.payload["raise"])
    return echo(job, ctx)


def train_once(job: Job, ctx: WorkerContext) -> dict[str, Any]:
    key = job.payload["cache_key"]
    out = Path(job.payload["out_dir"]) / key
    with ctx.claim(key, ttl=float(job.payload.get("ttl", 1.0)), is_done=out.exists) as won:
        if won:
            with open(job.payload["record"], "a", encoding="utf-8") as handle:
                handle.write(f"{os.getpid()}\n")
            time.sleep(float(job.payload.get("train_s", 0.5)))
            # Write aside, then rename: the adapter appears whole or not at all.
            tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
            tmp.mkdir(parents=True)
            (tmp / "adapter.txt").write_text(f"trained by {os.getpid()}\n", encoding="utf-8")
            os.rename(tmp, out)
    return {"cache_hit": not won, "pid": os.getpid(), "adapter_dir": str(out)}


HANDLERS = {"test": fail_or_echo, "train": train_once}


def serve(argv: list[str] | None = None) -> int:
    """A worker on any backend of coral.testing.transports, for the fault tests' non-local backends:
    python -m coral.testing.handlers FACTORY FOLDER --kind K [--kind K] --lease-seconds S
    (the local backend's fault tests run the real `coral worker` instead)."""
    import argparse
    import logging
    import signal
    import threading

    from coral.execution.jobs import Handlers
    from coral.execution.workers import Worker
    from coral.home import Home
    from coral.testing.transports import by_name

    parser = argparse.ArgumentParser()
    parser.add_argument("factory")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--kind", dest="kinds", action="append", required=True)
    parser.add_argument("--lease-seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s test-worker[%(process)d] %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    transport = by_name(args.factory).make(args.folder)
    Worker(transport, args.kinds, handlers=Handlers(HANDLERS), lease_seconds=args.lease_seconds,
           home=Home(args.folder), stop=stop).run()
    transport.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(serve())
