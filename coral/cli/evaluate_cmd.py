"""coral evaluate RUN [RUN ...]: each finished run's pick re-evaluated on fresh seeds and held-out
instances, beside the untuned model (coral.run.reevaluation); the Compare page shows the result."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from coral.cli.benchmark_cmd import positive_int

if TYPE_CHECKING:
    from coral.home import Home


def register(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser(
        "evaluate", help="re-evaluate finished runs' best genomes on fresh seeds and held-out instances")
    evaluate.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    evaluate.add_argument("--fresh", type=positive_int, default=2, metavar="N",
                          help="fresh sampling seeds, derived from each run's seed (default 2)")
    evaluate.add_argument("--samples", type=positive_int, default=5, metavar="K",
                          help="answers per instance, k of fixed@k (default 5)")
    evaluate.add_argument("--on", choices=("held-out", "run"), default="held-out",
                          help="held-out: every eval-side instance of the benchmark's split (default); "
                               "run: the eval instances the run itself scored")
    evaluate.set_defaults(func=_evaluate)


def _ingest(home: Home) -> str | None:
    """Bring the store up to date; when a dashboard (or `coral ingest`) holds it, its ingestor does
    that: say so and go on with its snapshot. Returns the holder's message, or None."""
    from coral.store.ingest import Ingestor
    from coral.store.store import StoreError

    try:
        ingestor = Ingestor(home, None, remote=())
    except StoreError as exc:
        if "in use by process" not in str(exc):
            raise
        return str(exc)
    try:
        ingestor.run_once(snapshot=True)
    finally:
        ingestor.stop()
    return None


def _evaluate(args: argparse.Namespace) -> int:
    from coral.analysis.reevaluated import evaluate_runs, reevaluation_summary
    from coral.errors import CoralError
    from coral.home import Home
    from coral.run.registry import run_info, run_record

    home = Home()
    run_ids = list(dict.fromkeys(args.run_ids))
    for run_id in run_ids:
        run_record(home, run_id)  # one line for a run this home does not have
        state = run_info(home, run_id).state
        if state != "finished":
            raise CoralError(f"run {run_id} is {state}: its pick is final once it has finished")
    held = _ingest(home)
    if held:
        print(f"coral evaluate: {held.split(' (')[0]}; reading its snapshot", file=sys.stderr, flush=True)

    def progress(line: str) -> None:
        print(f"coral evaluate: {line}", file=sys.stderr, flush=True)

    for done in evaluate_runs(run_ids, fresh=args.fresh, samples=args.samples, on=args.on, home=home,
                              log=progress):
        print(f"{done['run_id']}: genome {done['genome_id']} fixed@{args.samples} "
              f"{done['fixed_at_k']:.3f}, no adapter {done['baseline_fixed_at_k']:.3f} on "
              f"{done['instances']} {args.on} instances x {args.fresh} fresh seeds "
              f"({done['seconds']:.0f} s) -> {done['path']}", flush=True)
    if _ingest(home) is not None:
        print("The dashboard's ingestor stores these within seconds: Compare runs shows them.", flush=True)
        return 0
    summary = reevaluation_summary(run_ids, home)
    for row in summary["groups"].itertuples():
        print(f"{row.label} [{row.group}], n = {row.n}: {row.mean:.3f}; no adapter {row.baseline:.3f}; "
              f"difference {_difference(row.vs_baseline, row.vs_baseline_se)} over seeds")
    for row in summary["differences"].itertuples():
        print(f"[{row.a}] - [{row.b}] over {row.seeds} shared seeds: {_difference(row.by_seed, row.by_seed_se)}; "
              f"paired by instance {_difference(row.by_instance, row.by_instance_se)}")
    for run_id, why in summary["missing"]:
        print(f"{run_id}: not in the summary ({why})")
    return 0


def _difference(mean: float, se: float) -> str:
    return f"{mean:+.3f} ± {se:.3f} ({mean / se:.1f} SE)" if se > 0 else f"{mean:+.3f} (SE 0)"
