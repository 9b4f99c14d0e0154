"""coral ingest [--follow]: the store's single writer, when no dashboard runs one."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily at run time: `coral --help` must not load the store
    from coral.store.ingest import Ingestor


def register(sub: argparse._SubParsersAction) -> None:
    ingest = sub.add_parser(
        "ingest", help="load run events into CORAL_HOME/store.duckdb and refresh its read snapshot")
    ingest.add_argument("--follow", action="store_true",
                        help="keep ingesting until interrupted (live events partitions + logs)")
    ingest.add_argument("--transport", default="local", choices=["local", "modal", "none"],
                        help="where live events of this home's runs arrive (none: logs only, and no copies "
                             "of runs submitted to Modal)")
    ingest.add_argument("--interval", type=float, default=0.5, help="seconds between cycles with --follow")
    ingest.add_argument("--json", action="store_true")
    ingest.set_defaults(func=_ingest)


def _ingest(args: argparse.Namespace) -> int:
    from coral.errors import CoralError
    from coral.home import Home
    from coral.services.backends import backend_for, remote_backends
    from coral.store.ingest import Ingestor

    if args.interval <= 0:
        raise CoralError(f"--interval must be positive, got {args.interval}")
    home = Home()
    # Logs only with --transport none; else also the runs submitted from here to a remote backend.
    logs_only = args.transport == "none"
    ingestor = Ingestor(home, None if logs_only else backend_for(args.transport),
                        remote=() if logs_only else remote_backends())
    shown: dict[str, str] = {}  # unreadable runs already reported
    try:
        applied = ingestor.run_once(snapshot=True)
        _report(args, ingestor, applied, shown)
        while args.follow:
            time.sleep(args.interval)
            applied = ingestor.run_once()
            if applied or ingestor.status.unreadable != shown:
                _report(args, ingestor, applied, shown)
    finally:
        ingestor.stop()
    return 0


def _report(args: argparse.Namespace, ingestor: Ingestor, applied: int, shown: dict[str, str]) -> None:
    counts = ingestor.store.counts()
    status = ingestor.status
    if args.json:
        print(json.dumps({"applied": applied, "counts": counts, "waiting": status.waiting,
                          "unreadable": status.unreadable}), flush=True)
    else:
        print(f"ingested {applied} events; store: " + ", ".join(f"{k} {v}" for k, v in counts.items()),
              flush=True)
    # A run that cannot be read holds back only itself; say so once per reason.
    for run_id, reason in sorted(status.unreadable.items()):
        if shown.get(run_id) != reason:
            print(f"coral: warning: run {run_id} cannot be ingested (the others are): {reason}",
                  file=sys.stderr, flush=True)
    shown.clear()
    shown.update(status.unreadable)
