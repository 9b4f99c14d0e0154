"""coral worker --backend local --kind echo [--kind train ...|all] [--handlers module:attr]"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    worker = sub.add_parser(
        "worker", help="serve jobs from the queues until stopped (or idle)",
        description="Take jobs of the given kinds from the backend's queues, run them, deliver "
                    "their results. SIGTERM finishes the current job, then exits.",
    )
    worker.add_argument("--backend", default="local", help="transport backend (default: local)")
    worker.add_argument("--kind", dest="kinds", action="append", required=True,
                        metavar="KIND", help="train, generate, test, echo, or all; repeatable "
                                             "or comma-separated")
    worker.add_argument("--handlers", metavar="MODULE:ATTR",
                        help="a dict of kind -> handler that extends or overrides the built-ins")
    worker.add_argument("--idle-exit", type=_positive, metavar="SECONDS",
                        help="exit after this long without work (default: never)")
    worker.add_argument("--lease-seconds", type=_positive, metavar="SECONDS",
                        help="lease length, renewed every third of it (default: 120, "
                             "as backend.lease_seconds)")
    worker.set_defaults(func=_worker)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def _worker(args: argparse.Namespace) -> int:
    from coral.execution.jobs import JobBodies
    from coral.execution.workers import DEFAULT_LEASE_SECONDS, PARENT_ENV, Worker, die_with_parent, expand_kinds
    from coral.home import Home
    from coral.services.backends import backend_for

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s coral-worker[%(process)d] %(levelname)s %(message)s")
    handlers = JobBodies(args.handlers).table()
    kinds = expand_kinds(args.kinds, handlers)
    lease = args.lease_seconds or DEFAULT_LEASE_SECONDS
    home = Home()
    stop = threading.Event()

    def on_term(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    parent = os.environ.get(PARENT_ENV)
    if parent:  # a run's pool worker: it dies with its engine, which alone handles Ctrl-C
        die_with_parent(int(parent))
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    with backend_for(args.backend).open_transport(home) as transport:
        worker = Worker(transport, kinds, handlers=handlers, lease_seconds=lease,
                        idle_exit=args.idle_exit, home=home, stop=stop)
        worker.run()
    return 0
