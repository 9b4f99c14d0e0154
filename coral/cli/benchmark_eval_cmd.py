"""coral bench mutate ROOT --out DIR ...; coral bench eval ROOT [--model M] [--adapter DIR] [--classes C,...]

`mutate` derives bug instances from each problem's reference fix (coral.benchmark.mutate) and
keeps those the problem's tests fail in the sandbox (coral.sandbox.judge). The output is a
benchmark in the same QuixBugs layout: `coral bench check`, `coral bench split` and runs read it
like any other. `eval` scores one model (and optional adapter) on a benchmark with the stages
a run uses (coral.run.evaluate). Registered under `coral bench` by coral.cli.benchmark_cmd.
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

    evaluate = bench_sub.add_parser(
        "eval", help="evaluate one model (and optional adapter) on a benchmark: fixed@k, bugfix"
    )
    evaluate.add_argument("root", type=Path, help="benchmark directory")
    evaluate.add_argument("--model", default=None, metavar="M",
                          help="model folder or hub id (default: the config's model.name)")
    evaluate.add_argument("--adapter", type=Path, default=None, metavar="DIR",
                          help="adapter folder to merge into the model (e.g. coral export-adapter)")
    evaluate.add_argument("--samples", type=positive_int, default=None, metavar="K",
                          help="answers per problem, k of fixed@k (default: benchmark.samples)")
    evaluate.add_argument("--split", choices=("eval", "train", "all"), default="eval",
                          help="which problems (default eval)")
    evaluate.add_argument("--seed", type=_non_negative_int, default=0, help="sampling seed")
    evaluate.add_argument("--config", type=Path, default=None,
                          help="knob ranges, generation, sandbox and model settings from this "
                               "config (default: the built-in defaults)")
    evaluate.add_argument("--classes", default=None, metavar="CLASS,...",
                          help="only the instances of these bug classes, comma-separated (a "
                               "`coral bench mutate` benchmark: ROOT/mutants.json)")
    evaluate.add_argument("--no-echo", action="store_true",
                          help="skip the echo baseline (the buggy programs unchanged) beside the model")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(func=_eval)


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


def _eval(args: argparse.Namespace) -> int:
    import json
    import sys

    from coral.config import Config, ModelConfig, load_config
    from coral.run.evaluate import evaluate_model

    config = load_config(args.config) if args.config else Config()
    if args.model is not None:
        name = args.model
        if Path(name).expanduser().exists():  # a local folder: absolute, like config paths
            name = str(Path(name).expanduser().resolve())
        model = ModelConfig.model_validate({**config.model.model_dump(), "name": name})
        config = config.model_copy(update={"model": model})
    samples = args.samples or config.benchmark.samples
    classes = None
    if args.classes is not None:
        classes = list(dict.fromkeys(c.strip() for c in args.classes.split(",") if c.strip()))

    def progress(line: str) -> None:  # stderr: stdout stays the table (or the JSON)
        print(f"coral bench eval: {line}", file=sys.stderr, flush=True)

    result = evaluate_model(args.root, config, adapter=args.adapter, samples=samples,
                            split=args.split, seed=args.seed, classes=classes, log=progress,
                            echo=not args.no_echo)  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    width = max([len("problem")] + [len(p["name"]) for p in result["problems"]])
    print(f"{'problem':<{width}}  fixed  bugfix  fix_chance")
    for row in result["problems"]:
        print(f"{row['name']:<{width}}  {'yes' if row['fixed'] else 'no':>5}  {row['bugfix']:.3f}  "
              f"{row['fix_chance']:10.3f}")
    print(f"fixed@{result['k']}: {result['fixed']}/{result['total']} problems; mean bugfix "
          f"{result['bugfix']:.3f} +/- {result['bugfix_se']:.3f} (SE over problems); computed fix_chance "
          f"(k={config.objectives.fix_chance_k}) {result['fix_chance']:.3f}; "
          f"model {result['model']}" + (f", adapter {result['adapter']}" if result["adapter"] else ""))
    if "echo" in result:
        echo = result["echo"]
        print(f"echo (buggy programs unchanged): fixed {echo['fixed']}/{echo['total']}; mean bugfix "
              f"{echo['bugfix']:.3f}; cases passed {echo['passed']:.3f} (model: {result['passed']:.3f})")
    return 0
