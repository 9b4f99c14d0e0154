"""coral config show CONFIG [--set k=v]..."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    config = sub.add_parser("config", help="inspect configs")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = config_sub.add_parser("show", help="print the fully resolved config")
    show.add_argument("config", help="path to a YAML config")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a key, value parsed as YAML (repeatable)")
    show.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    show.set_defaults(func=_show)


def _show(args: argparse.Namespace) -> int:
    from coral.config import config_to_dict, dump_config, load_config

    config = load_config(args.config, args.overrides)
    print(json.dumps(config_to_dict(config), indent=2) if args.json else dump_config(config), end="")
    if args.json:
        print()
    return 0
