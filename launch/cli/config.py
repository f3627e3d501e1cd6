"""`mnist-dist config`: a config with its overrides, validated and printed resolved."""

from __future__ import annotations

import argparse

from launch.config import add_config_arguments, load_config
from launch.frameworks import FRAMEWORKS, LAUNCHERS, Placement, check


def add(commands) -> None:
    config = commands.add_parser(
        "config",
        help="validate a config with overrides and print it resolved",
        description="Print the config a run would use: defaults, then --config, then overrides. With "
        "--framework (and --launcher, --nproc), also check that the framework can run it that way.",
    )
    config.add_argument("--framework", choices=sorted(FRAMEWORKS))
    config.add_argument("--launcher", choices=LAUNCHERS)
    config.add_argument("--nproc", type=int, default=1, help="workers in all (default 1)")
    add_config_arguments(config)
    config.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    import yaml

    config = load_config(args.config, args.overrides)
    if args.framework:
        check(config, args.framework, Placement(launcher=args.launcher, workers=args.nproc))
    print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
    return 0
