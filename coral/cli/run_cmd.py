"""coral run | runs | status | resume | pause | continue | stop | validate | cache | export-adapter"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="start an evolution run")
    run.add_argument("config", help="path to a YAML config")
    _run_options(run)
    run.add_argument("--run-id", help="name the run (default: time-sortable id)")
    run.add_argument("--detach", action="store_true",
                     help="return once the run is registered; it goes on in the background")
    run.set_defaults(func=_run)

    runs = sub.add_parser("runs", help="list runs and each one's best fitness (the best genome's mean)")
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(func=_runs)

    status = sub.add_parser("status", help="one run's state and event-log summary")
    status.add_argument("run_id")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)

    resume = sub.add_parser("resume", help="continue an interrupted run from its last checkpoint")
    resume.add_argument("run_id")
    resume.set_defaults(func=_resume)

    for name, text in (("pause", "pause a run between jobs"), ("continue", "continue a paused run"),
                       ("stop", "stop a run between jobs")):
        control = sub.add_parser(name, help=text)
        control.add_argument("run_id")
        control.set_defaults(func=_control, request=name)

    validate = sub.add_parser(
        "validate", help="run a config serially, on >= 2 local workers and on the Modal double; "
        "results must match")
    validate.add_argument("config")
    validate.add_argument("--set", dest="overrides", action="append", default=[],
                          metavar="KEY=VALUE")
    validate.add_argument("--workers", type=int, default=2)
    validate.add_argument("--json", action="store_true")
    validate.add_argument("--handlers", help=argparse.SUPPRESS)
    validate.set_defaults(func=_validate)

    cache = sub.add_parser("cache", help="the adapter cache under CORAL_HOME/adapters")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    ls = cache_sub.add_parser("ls", help="list cached adapters")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_cache_ls)
    prune = cache_sub.add_parser(
        "prune", help="remove half-written and damaged adapters (and, with --unused, unused ones)")
    prune.add_argument("--unused", action="store_true",
                       help="also remove adapters no registered run has used")
    prune.add_argument("--dry-run", action="store_true")
    prune.set_defaults(func=_cache_prune)

    export = sub.add_parser("export-adapter", help="copy a genome's adapter out as a peft folder")
    export.add_argument("run_id")
    export.add_argument("genome_id")
    export.add_argument("--out", required=True, help="destination folder (must not exist)")
    export.set_defaults(func=_export)


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a key, value parsed as YAML")
    parser.add_argument("--backend", choices=["local", "modal", "serial"])
    parser.add_argument("--workers", type=int, help="worker processes (local backend)")
    parser.add_argument("--handlers", help=argparse.SUPPRESS)  # test and benchmark job bodies
    parser.add_argument("--modal-double", metavar="HANDLE",
                        help="TEST HOOK: use the Modal double whose handle file is HANDLE "
                             "(coral.testing.modal_double) instead of Modal")


# ---------------------------------------------------------------------- progress


class Progress:
    """A bar per stage on a terminal; plain lines (at most every few seconds) otherwise. On
    stderr: stdout keeps what a script reads (the run id first, how the run ended last)."""

    def __init__(self, stream: Any = None, interval: float = 3.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval
        self._last = 0.0

    def __call__(self, kind: str, info: dict) -> None:
        if kind == "job":
            now = time.monotonic()
            if not self.tty and now - self._last < self.interval:
                return
            self._last = now
            line = "  ".join(_bar(stage, info[stage], self.tty) for stage in
                             ("train", "generate", "test") if stage in info)
            self._write(line, transient=self.tty)
        elif kind == "generation":
            self._write(f"generation {info['generation']} done in {info['seconds']:.1f}s")
        elif kind in ("paused", "continued"):
            self._write(f"run {kind}")
        elif kind == "validate":
            self._write(f"validate: the {info['side']} run {info['run_id']}")

    def _write(self, line: str, transient: bool = False) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + line + ("" if transient else "\n"))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _bar(stage: str, counts: dict[str, int], tty: bool) -> str:
    total = sum(counts.values())
    done = counts.get("done", 0) + counts.get("failed", 0)
    text = f"{stage} {done}/{total}"
    if counts.get("running"):
        text += f" ({counts['running']} running)"
    if tty:
        width = 12
        filled = width * done // total if total else 0
        text = f"{stage} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
    return text


# ---------------------------------------------------------------------- run, resume, detach


def _run(args: argparse.Namespace) -> int:
    from coral.home import Home, check_run_id, new_run_id
    from coral.run.lifecycle import check_run, resolve_config, run_from_config
    from coral.services.backends import config_backend, run_context, use_modal_double

    if args.modal_double:
        use_modal_double(args.modal_double)
    config = resolve_config(args.config, args.overrides, args.backend, args.workers)
    backend = config_backend(config)
    check_run(config, backend)  # here too, so `--detach` reports it rather than its child
    # `is not None`: an empty --run-id is a mistake to report, not a request for a generated id.
    run_id = check_run_id(args.run_id) if args.run_id is not None else new_run_id()
    if not backend.runs_here:
        # Its orchestrator runs there: its paths resolve there, and closing the laptop does not
        # stop it.
        overrides = [*args.overrides, f"backend.kind={backend.kind}"]
        line = backend.submit(args.config, overrides, run_id, Home())
        print(run_id, flush=True)
        print(line)
        return 0
    if args.detach:
        return _detach(args, run_id, Home())
    print(run_id, flush=True)
    result = run_from_config(config, run_id, run_context(config, handlers=args.handlers,
                                                         progress=Progress()))
    return _ended(run_id, result)


def _ended(run_id: str, result: Any) -> int:
    """The run's last line: how it ended; a stopped run (`coral stop`, SIGTERM, Ctrl-C) resumes."""
    print(f"run {run_id} {result.state} in {result.wall_seconds:.1f}s", flush=True)
    if result.state == "stopped":
        print(f"`coral resume {run_id}` continues it", flush=True)
    return 0 if result.state == "finished" else 3


def _detach(args: argparse.Namespace, run_id: str, home: Any) -> int:
    from coral.execution.jobs import JobBodies
    from coral.run.detached import ORCHESTRATOR_LOG, run_command, start_detached, wait_registered

    cmd = run_command(args.config, run_id, args.overrides, args.backend, args.workers, JobBodies(args.handlers),
                      args.modal_double)
    proc = start_detached(home, run_id, cmd)
    print(run_id, flush=True)
    failure = wait_registered(home, run_id, proc)
    if failure:
        print(f"coral: error: {failure}", file=sys.stderr)
        return 2
    print(f"run {run_id} registered; running in the background (pid {proc.pid}), "
          f"log: {home.run_dir(run_id) / ORCHESTRATOR_LOG}")
    return 0


def _resume(args: argparse.Namespace) -> int:
    from coral.home import Home
    from coral.run.backend import RunContext
    from coral.run.lifecycle import resume_run
    from coral.services.backends import run_backend

    home = Home()
    backend, config = run_backend(home, args.run_id)
    print(args.run_id, flush=True)
    if config is None or not backend.runs_here:
        # The run lives on its backend (a Modal Volume; a folder here is only the ingestor's copy,
        # coral/store/mirror.py): resume it there, never from the copy in this process.
        print(backend.resume(args.run_id, home))
        return 0
    result = resume_run(args.run_id, RunContext(backend, home, progress=Progress()))
    return _ended(args.run_id, result)


# ---------------------------------------------------------------------- registry and control


def _best_by_run(run_ids: list[str] | None) -> dict[str, dict[str, Any]]:
    """Each run's best genome (coral.analysis.best: the highest mean fitness over a genome's
    evaluations, among those evaluated at least twice, latest generation first) from the store
    snapshot, or the run logs when there is none."""
    from coral.analysis.best import best_genomes
    from coral.home import Home

    frame = best_genomes(run_ids, Home())
    return {str(row["run_id"]): {"genome_id": str(row["genome_id"]), "fitness": float(row["fitness"]),
                                 "evaluations": int(row["evaluations"]), "se": float(row["se"]),
                                 "generation": int(row["generation"])}
            for row in frame.to_dict("records")}


def _best_json(best: dict[str, Any] | None) -> dict[str, Any]:
    if best is None:
        return {"best_genome": None, "best_fitness": None, "best_evaluations": None, "best_se": None}
    se = best["se"]
    return {"best_genome": best["genome_id"], "best_fitness": best["fitness"],
            "best_evaluations": best["evaluations"], "best_se": None if se != se else se}  # NaN -> null


def _runs(args: argparse.Namespace) -> int:
    from coral.home import Home
    from coral.run.progress import generations_done
    from coral.run.registry import ACTIVE, list_runs
    from coral.services.backends import remote_backends

    runs = list_runs(Home())
    remote = [r for backend in remote_backends() for r in backend.remote_runs(Home())]
    best = _best_by_run(None) if runs else {}
    if args.json:
        print(json.dumps([{**r.as_dict(), "generations_done": generations_done(r.state, r.generation, r.generations),
                           **_best_json(best.get(r.run_id))}
                          for r in runs] + [{"run_id": m.run_id, "state": m.state, "backend": m.backend,
                                             **m.detail} for m in remote],
                         indent=2))
        return 0
    if not runs and not remote:
        print("no runs")
        return 0
    # DONE counts finished generations; GEN is the running generation's number, 0-based like
    # every generation number (events, store, charts): a 5-generation run runs 0..4 and ends 5/5.
    # BEST: the best genome's mean fitness over its N evaluations (coral.analysis.best).
    print(f"{'RUN':32} {'STATE':12} {'DONE':>7} {'GEN':>4} {'BEST':>6} {'N':>3} {'STRATEGY':10} BACKEND")
    for r in runs:
        done = f"{generations_done(r.state, r.generation, r.generations)}/{r.generations or '?'}"
        gen = str(r.generation) if r.state in ACTIVE and r.generation is not None else "-"
        top = best.get(r.run_id)
        fitness, count = (f"{top['fitness']:.3f}", str(top["evaluations"])) if top else ("-", "-")
        print(f"{r.run_id:32} {r.state:12} {done:>7} {gen:>4} {fitness:>6} {count:>3} {r.strategy or '?':10} "
              f"{r.backend or '?'}")
    for m in remote:
        where = f"app {m.detail['app']}; " if "app" in m.detail else ""
        print(f"{m.run_id:32} {m.state:12} {'?':>7} {'-':>4} {'-':>6} {'-':>3} {'?':10} {m.backend} "
              f"({where}`coral status {m.run_id}`)")
    if runs:
        print("BEST: the best genome's mean fitness over its N evaluations")
    return 0


def _status(args: argparse.Namespace) -> int:
    from coral.home import Home
    from coral.run.progress import generations_done
    from coral.run.registry import ACTIVE, run_info, run_status
    from coral.services.backends import run_backend
    from coral.services.live import live_view, stage_text

    backend, config = run_backend(Home(), args.run_id)
    if config is None:  # a run living on its backend: its status as last committed there
        status = backend.run_status(Home(), args.run_id)
        if args.json:
            print(json.dumps(status, indent=2, default=str))
            return 0
        print(f"run {args.run_id}: {status.get('state')} on {backend.kind} (generation "
              f"{status.get('generation', '-')}, as last committed to the Volume)")
        print(f"  orchestrator calls: {', '.join(status['orchestrator_calls'])}")
        if status.get("error"):
            print(f"  error: {status['error']}")
        return 0
    status = run_status(Home(), args.run_id)
    info = run_info(Home(), args.run_id)
    status["generations_done"] = generations_done(info.state, info.generation, info.generations)
    best = _best_by_run([args.run_id]).get(args.run_id)
    status.update(_best_json(best))
    view = live_view(args.run_id, Home())
    status["stages"] = view.stages  # the running generation's job counts per stage and state
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    log = status["log"]
    print(f"run {args.run_id}: {status['state']}")
    running = (f"generation {info.generation} running (0-based), "
               if info.state in ACTIVE and info.generation is not None else "")
    last = log["generations_finished"]
    print(f"  {running}{status['generations_done']} of {info.generations or '?'} generations finished"
          + (f" (last: generation {last})" if last is not None else ""))
    if best is None:
        print("  best genome: none scored yet")
    else:
        from coral.analysis.best import BEST_DEFINITION, describe

        print(f"  best genome {best['genome_id']}: fitness {describe(best)} ({BEST_DEFINITION})")
    print(f"  events: {log['events']} ({', '.join(f'{k} {v}' for k, v in sorted(log['counts'].items()))})")
    for stage, counts in view.stages.items():
        if counts.get("total"):
            print(f"  {stage_text(stage, counts)}")
    if status.get("error"):
        print(f"  error: {status['error']}")
    return 0


def _control(args: argparse.Namespace) -> int:
    from coral.services.dashboard import request_control

    print(request_control(args.run_id, args.request))
    return 0


# ---------------------------------------------------------------------- validate


def _validate(args: argparse.Namespace) -> int:
    from coral.execution.jobs import JobBodies
    from coral.modal.validate import validate_everywhere

    report = validate_everywhere(args.config, args.overrides, max(2, args.workers),
                                 bodies=JobBodies(args.handlers), progress=Progress())
    same = report["identical_to_serial"]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for side in ("serial", "queue"):
            r = report[side]
            print(f"{side:7} run {r['run_id']}: {r['wall_seconds']:.1f}s, worker pids "
                  f"{r['worker_pids']}, cache-hit rate {r['cache_hit_rate']:.2f}, "
                  f"retries {r['retries']}")
        r = report["modal"]
        print(f"{'modal':7} run {r['run_id']}: {r['wall_seconds']:.1f}s on the Modal double, "
              f"retries {r['retries']}")
        for side in ("queue", "modal"):
            differing = ", ".join(k for k, v in same[side].items() if not v)
            where = report["first_difference"][side] or differing
            print(f"{side:7} " + ("identical to serial" if not differing
                                   else f"DIFFERENT from serial: {where}"))
            if report["runtime_left_out"].get(side):
                print(f"{side:7} {report['runtime_left_out'][side]}")
        if all(all(v.values()) for v in same.values()):
            print("serial, local and modal (double): identical")
    return 0 if all(all(v.values()) for v in same.values()) else 1


# ---------------------------------------------------------------------- cache and export


def _cache_ls(args: argparse.Namespace) -> int:
    from coral.run.registry import list_adapters

    entries = list_adapters()
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    if not entries:
        print("no cached adapters")
    for e in entries:
        genes = e.get("genes") or {}
        desc = (f"{genes.get('adapter_type')} r={genes.get('rank')} a={genes.get('alpha')} "
                f"{','.join(genes.get('target_modules', []))}" if genes else e["problem"])
        print(f"{e['key']:26} {e['bytes'] / 1024:9.1f} KiB  {desc}")
    return 0


def _cache_prune(args: argparse.Namespace) -> int:
    from coral.run.registry import prune

    removed = prune(unused=args.unused, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for name, why in removed:
        print(f"{verb} {name} ({why})")
    print(f"{verb} {len(removed)} entr{'y' if len(removed) == 1 else 'ies'}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from coral.run.registry import export_adapter

    out = export_adapter(args.run_id, args.genome_id, args.out)
    print(f"exported adapter of genome {args.genome_id} to {out}")
    return 0
