"""coral modal deploy [CONFIG] | status [CONFIG] | cost RUN_ID | plan [CONFIG]: the Modal app, its
queues and containers, what a run's jobs took, and what a generation will need.

CONFIG defaults to configs/modal-codellama.yaml when it exists, else the built-in defaults;
only its `modal` section matters here. Both check for credentials before touching Modal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    modal = sub.add_parser("modal", help="deploy the Modal app, inspect its queues")
    modal_sub = modal.add_subparsers(dest="modal_command", required=True, metavar="ACTION")
    deploy = modal_sub.add_parser("deploy", help="deploy coral/modal/app.py with this config")
    status = modal_sub.add_parser(
        "status", help="queue depths, containers and their idle time, adapter cache")
    for parser in (deploy, status):
        parser.add_argument("config", nargs="?", help="a CORAL config (its `modal` section)")
        parser.add_argument("--set", dest="overrides", action="append", default=[],
                            metavar="KEY=VALUE", help="override a key (repeatable)")
    deploy.add_argument("--dry-run", action="store_true",
                        help="print the deploy command and settings, deploy nothing")
    status.add_argument("--json", action="store_true", help="print JSON")
    deploy.set_defaults(func=_deploy)
    status.set_defaults(func=_status)
    cost = modal_sub.add_parser(
        "cost", help="GPU and CPU seconds of a run's jobs, from its events (any backend)")
    cost.add_argument("run_id")
    cost.add_argument("--json", action="store_true", help="print JSON")
    cost.set_defaults(func=_cost)
    plan = modal_sub.add_parser(
        "plan", help="estimated GPU memory, time and cost of one generation (offline, no token)")
    plan.add_argument("config", nargs="?", help="a CORAL config")
    plan.add_argument("--set", dest="overrides", action="append", default=[],
                      metavar="KEY=VALUE", help="override a key (repeatable)")
    plan.add_argument("--json", action="store_true", help="print JSON")
    plan.set_defaults(func=_plan)


def _plan(args: argparse.Namespace) -> int:
    from coral.errors import ConfigError
    from coral.modal.plan import format_plan, plan

    report = plan(_config(args))
    print(json.dumps(report, indent=2) if args.json else format_plan(report))
    if report["problems"]:
        raise ConfigError("; ".join(report["problems"]))  # one line, after the figures
    return 0


def _config(args: argparse.Namespace) -> Any:
    from coral.config import apply_overrides, load_config, validate_config
    from coral.modal.launcher import DEFAULT_CONFIG

    if args.config:
        return load_config(args.config, args.overrides)
    if DEFAULT_CONFIG.is_file():
        return load_config(DEFAULT_CONFIG, args.overrides)
    return validate_config(apply_overrides({}, args.overrides), base_dir=Path.cwd(),
                           source="built-in defaults")


def deploy_command() -> list[str]:
    """`modal deploy` of the app module, through this interpreter (no shell)."""
    return [sys.executable, "-m", "modal", "deploy", "-m", "coral.modal.app"]


def _deploy(args: argparse.Namespace) -> int:
    from coral.execution.transport.modal_backend import check_credentials
    from coral.modal.constants import SECTION_ENV

    section = _config(args).modal
    command = deploy_command()
    if args.dry_run:
        print(f"{SECTION_ENV}={section.model_dump_json()}")
        print(" ".join(command))
        return 0
    check_credentials()
    # The app module reads its settings from this variable at import (and bakes them into the
    # image), so what was validated here is exactly what gets deployed.
    env = {**os.environ, SECTION_ENV: section.model_dump_json()}
    return subprocess.run(command, env=env, check=False).returncode


def _status(args: argparse.Namespace) -> int:
    from coral.execution.transport.modal_backend import check_credentials
    from coral.modal.launcher import status

    config = _config(args)
    check_credentials()
    report = status(config)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(format_status(report, config.modal.volume))
    return 0


def format_status(report: dict[str, Any], volume: str) -> str:
    queues = ", ".join(f"{name} {depth}" for name, depth in report["queues"].items())
    workers = report["workers"]
    functions = "; ".join(
        f"{name}: {w['running']} running, {w['backlog']} waiting"
        for name, w in workers.items() if isinstance(w, dict)
    )
    cache = report["cache"]
    lines = [
        f"app:     {report['app']}",
        f"queues:  {queues}",
        f"workers: {workers['busy']} busy; {functions}",
    ]
    for c in report.get("containers", []):
        state = ("busy" if c["busy"] else f"idle {c['idle_seconds']:.0f}s"
                 + (" (stale: gone without saying so)" if c["stale"] else ""))
        lines.append(f"  {c['group']:9} {c['worker']:28} run {c['run'] or '-':14} "
                     f"{c['jobs']:5} jobs  {state}")
    lines.append(f"cache:   {cache['adapters']} adapters on volume {volume} "
                 f"({cache['done_markers']} done markers)")
    return "\n".join(lines)


def _cost(args: argparse.Namespace) -> int:
    from coral.errors import CoralError
    from coral.home import Home, check_run_id
    from coral.modal.costs import run_costs

    events = Home().events_dir(check_run_id(args.run_id))
    if not events.is_dir():
        raise CoralError(f"no events for run {args.run_id} in {events.parent} (a Modal run's "
                         "folder is on the Volume: `modal volume get VOLUME runs/RUN_ID`)")
    report = run_costs(events)
    from coral.modal.costs import recorded_calls

    report["calls"] = recorded_calls(events.parent)  # per worker group, as the calls recorded them
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    gpu, per = report["gpu_seconds"], report["per_genome"]
    print(f"run {args.run_id}: {report['genome_evaluations']} genome evaluations, "
          f"{report['trainings']} trainings, {report['tests']} tests")
    print(f"  GPU seconds: train {gpu['train']:.1f}, generate {gpu['generate']:.1f}, "
          f"total {gpu['total']:.1f} ({per['gpu_seconds']:.2f} per genome)")
    print(f"  CPU seconds: test {report['cpu_seconds']['test']:.1f} "
          f"({per['test_cpu_seconds']:.2f} per genome); idle and start-up time not included")
    home = Home()
    if home.run_config(args.run_id).is_file():  # the run's config: its GPUs and idle settings
        from coral.modal.costs import idle_bound, idle_recorded, recorded_calls
        from coral.run.events import read_events
        from coral.run.registry import run_config

        calls = recorded_calls(home.run_dir(args.run_id))
        if calls:  # the worker calls' own busy and idle seconds
            recorded = idle_recorded(calls, run_config(home, args.run_id))
            for stage, row in recorded["stages"].items():
                money = ("" if row["usd_busy"] is None else
                         f"; ${row['usd_busy']:.2f} busy, ${row['usd_idle']:.2f} idle")
                print(f"  {stage} on {row['gpu']}: {int(row['calls'])} worker calls, "
                      f"{row['busy_seconds']:.1f} GPU-s busy, {row['idle_seconds']:.1f} GPU-s idle "
                      f"(recorded; with {recorded['scaledown_seconds']} s scaledown a call){money}")
            return 0
        generations = len({e.generation for e in read_events(events)
                           if e.type == "generation_finished"})
        bound = idle_bound(report, run_config(home, args.run_id), generations)
        for stage, row in bound["stages"].items():
            money = ("" if row["usd_busy"] is None else
                     f"; ${row['usd_busy']:.2f} busy, at most ${row['usd_idle_at_most']:.2f} idle")
            print(f"  {stage} on {row['gpu']}: {row['busy_seconds']:.1f} GPU-s busy, at most "
                  f"{row['idle_seconds_at_most']:.0f} GPU-s idle ({bound['per_call_seconds']} s a "
                  f"worker call){money}")
    return 0
