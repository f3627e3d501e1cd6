"""The `mnist-dist` command (also `python -m launch`): its parser, one sub-command per module of
launch.cli, and the one exit code."""

from __future__ import annotations

import argparse
import sys

from launch import __version__, log
from launch.cli import compare, config, data, diff, doctor, run, slurm, sweep, testbed
from launch.errors import UserError, report_and_exit
from launch.forecast import command as forecast

PROG = "mnist-dist"
COMMANDS = (data, config, run, doctor, sweep, forecast, compare, diff, slurm, testbed)  # in --help's order


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Data-parallel MNIST training for TensorFlow and PyTorch: launch, prepare data, measure scaling.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    log.setup(PROG)
    try:
        code = args.func(args)
    except UserError as exc:
        report_and_exit(exc)
    sys.exit(code)
