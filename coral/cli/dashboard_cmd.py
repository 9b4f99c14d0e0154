"""coral dashboard [--port N] [--address A]: serve the Streamlit dashboard (`streamlit run app.py`)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import TYPE_CHECKING

from coral.config import REPO_ROOT

if TYPE_CHECKING:
    from coral.execution.jobs import JobBodies

APP = REPO_ROOT / "app.py"


def register(sub: argparse._SubParsersAction) -> None:
    dash = sub.add_parser("dashboard", help="serve the dashboard (default http://127.0.0.1:8501)")
    dash.add_argument("--port", type=int, default=8501)
    # Loopback by default: the dashboard launches runs, so exposing it must be a deliberate choice.
    dash.add_argument("--address", default="127.0.0.1",
                      help="interface to bind (default 127.0.0.1; 0.0.0.0 exposes it to the network)")
    dash.add_argument("--handlers", default=None, metavar="MODULE:ATTR",
                      help="stand-in job bodies for runs launched from the pages (tests)")
    dash.add_argument("--modal-double", metavar="HANDLE", default=None,
                      help="TEST HOOK: backend `modal` is the Modal double whose handle file is "
                           "HANDLE (coral.testing.modal_double), here and in launched runs")
    dash.set_defaults(func=_dashboard)


def streamlit_command(port: int, address: str, bodies: JobBodies | None = None,
                      modal_double: str | None = None) -> list[str]:
    """The argument list that serves app.py (never a shell string); app.py's own arguments
    follow `--` (Streamlit hands them to the script as sys.argv)."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", address,
           "--server.port", str(port), "--server.headless", "true",
           "--browser.gatherUsageStats", "false"]
    hooks = (bodies.cli_args() if bodies is not None and bodies.overridden else []) + (
        ["--modal-double", modal_double] if modal_double else [])
    return cmd + (["--", *hooks] if hooks else [])


def _dashboard(args: argparse.Namespace) -> int:
    from coral.errors import CoralError
    from coral.execution.jobs import JobBodies

    if not 1 <= args.port <= 65535:
        raise CoralError(f"--port {args.port}: must be 1..65535")
    if not APP.is_file():
        raise CoralError(f"dashboard entry point not found: {APP}")
    if args.modal_double:
        from coral.modal.double import connect_handle

        connect_handle(args.modal_double)  # a bad handle is one line here, not in every page
    print(f"CORAL dashboard on http://{args.address}:{args.port} (Ctrl-C stops it)", flush=True)
    # cwd = the repository, so Streamlit finds .streamlit/config.toml and pages/.
    return subprocess.call(streamlit_command(args.port, args.address, JobBodies(args.handlers), args.modal_double),
                           cwd=REPO_ROOT)
