"""coral bench mutate ROOT --out DIR [--per-problem N] [--seed S] [--jobs N] [--split FILE].

`mutate` derives bug instances from each problem's reference fix (coral.benchmark.mutate) and
keeps those the problem's tests fail in the sandbox (coral.sandbox.judge). The output is a
benchmark in the same QuixBugs layout: `coral bench check`, `coral bench split` and runs read it
like any other. Registered under `coral bench` by coral.cli.benchmark_cmd.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from coral.benchmark.mutate import DEFAULT_PER_PROBLEM, MAX_PER_PROBLEM


def register_actions(
    bench_sub: argparse._SubParsersAction, jobs: int, positive_int: Callable[[str], int]
) -> None:
    """`bench` actions beyond check/split; `positive_int` is the bench parser's argument type."""
    mutate = bench_sub.add_parser(
        "mutate", help="derive bug instances from each reference fix (QuixBugs bug classes)"
    )
    mutate.add_argument("root", type=Path, help="benchmark directory")
    mutate.add_argument("--out", type=Path, required=True,
                        help="output benchmark directory (must be new or empty)")
    mutate.add_argument("--per-problem", type=positive_int, default=DEFAULT_PER_PROBLEM,
                        metavar="N", help=f"instances kept per problem, at most {MAX_PER_PROBLEM} "
                                          f"(default {DEFAULT_PER_PROBLEM})")
    mutate.add_argument("--seed", type=_non_negative_int, default=0,
                        help="orders the candidate mutations (default 0)")
    mutate.add_argument("--jobs", type=positive_int, default=jobs,
                        help=f"problems derived at once (default {jobs})")
    mutate.add_argument("--split", type=Path, default=None,
                        help="split file (default: ROOT/split.json, else the derived split)")
    mutate.set_defaults(func=_mutate)


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _mutate(args: argparse.Namespace) -> int:
    from coral.benchmark.mutate import mutate_benchmark
    from coral.sandbox.judge import SandboxJudge

    judge = SandboxJudge()
    manifest = mutate_benchmark(args.root, args.out, args.per_problem, args.seed, judge,
                                args.jobs, args.split)
    instances = manifest["instances"]
    sides = {name: info["side"] for name, info in manifest["families"].items()}
    n_eval = sum(1 for i in instances if sides[i["family"]] == "eval")
    print(f"{len(instances)} instances of {len(sides)} problems ({len(instances) - n_eval} train, "
          f"{n_eval} eval), {judge.runs} mutants run -> {args.out}")
    for name, info in manifest["families"].items():
        if info["instances"] < args.per_problem:
            print(f"  {name}: {info['instances']} of {args.per_problem} (no further mutant fails "
                  "its tests)")
    return 0
