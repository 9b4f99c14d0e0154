"""The `coral` command. Each command group lives in its own module with a `register(sub)`.

Every command handler imports its implementation inside the handler: that is the reason for
each function-level import in coral/cli/. Parsing stays fast (`coral --help`, a typo) instead of
loading torch, duckdb or modal, which only the command that runs needs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from coral.errors import CoralError

COMMAND_MODULES = [
    "coral.cli.config_cmd",
    "coral.cli.run_cmd",
    "coral.cli.worker_cmd",
    "coral.cli.benchmark_cmd",
    "coral.cli.modal_cmd",
    "coral.cli.model_cmd",
    "coral.cli.ingest_cmd",
    "coral.cli.evaluate_cmd",
    "coral.cli.dashboard_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coral",
        description="CORAL: evolve LoRA adapters and generation knobs for a code-repair model.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CoralError as exc:
        print(f"coral: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # The system refused a file operation (a folder that cannot be made, a full disk): what
        # the user can act on is the path and the reason, not a traceback.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"coral: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("coral: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
