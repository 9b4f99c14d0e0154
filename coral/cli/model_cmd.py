"""coral model build-tiny [--steps N] [--out DIR] [--seed S] [--problems DIR] [--split FILE]
[--withhold CLASS,...|none]"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from coral.config import REPO_ROOT

DEFAULT_OUT = REPO_ROOT / "data" / "models" / "tiny-code"
DEFAULT_PROBLEMS = REPO_ROOT / "data" / "problems"


def register(sub: argparse._SubParsersAction) -> None:
    model = sub.add_parser("model", help="build the offline default model")
    model_sub = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    build = model_sub.add_parser(
        "build-tiny",
        help="train the tiny code-repair model from scratch (stdlib + training split, offline)",
    )
    build.add_argument("--steps", type=int, default=None,
                       help="optimiser steps (default: the committed model's schedule)")
    build.add_argument("--out", type=Path, default=DEFAULT_OUT,
                       help=f"output folder, replaced whole (default: {DEFAULT_OUT})")
    build.add_argument("--seed", type=int, default=0, help="seed for every random stream")
    build.add_argument("--problems", type=Path, default=DEFAULT_PROBLEMS,
                       help="benchmark whose TRAINING split joins the corpus")
    build.add_argument("--split", type=Path, default=None,
                       help="split file (default: PROBLEMS/split.json, else the derived split)")
    build.add_argument("--no-problems", action="store_true",
                       help="train on the standard library only")
    build.add_argument("--withhold", default=None, metavar="CLASS,...",
                       help="bug classes the base never trains on, comma-separated, or 'none' "
                            "(default: the committed model's, coral.model.tiny.TinySpec)")
    build.set_defaults(func=_build_tiny)  # fmt: skip


def _build_tiny(args: argparse.Namespace) -> int:
    from coral.errors import CoralError
    from coral.model.tiny import TinySpec, build_tiny

    if args.seed < 0:
        raise CoralError(f"--seed must be non-negative, got {args.seed}")
    problems = None if args.no_problems else args.problems
    spec = TinySpec()
    if args.withhold is not None:
        text = args.withhold.strip()
        withheld = () if text == "none" else tuple(dict.fromkeys(c.strip() for c in text.split(",") if c.strip()))
        spec = replace(spec, withheld_classes=withheld)  # checked by TinySpec: one line naming the unknown
    build_tiny(args.out, steps=args.steps, seed=args.seed, problems_root=problems,
               split_path=args.split, spec=spec, log=lambda line: print(line, file=sys.stderr, flush=True))  # fmt: skip
    return 0
