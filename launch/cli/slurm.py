"""`mnist-dist slurm`: submit (the same as `run --launcher slurm`), or show a job's state."""

from __future__ import annotations

import argparse

from launch.cli import run
from launch.cli.common import add_run_arguments
from launch.jobs import slurm


def add(commands) -> None:
    slurm_cmd = commands.add_parser("slurm", help="submit to Slurm, or show a job's state")
    slurm_sub = slurm_cmd.add_subparsers(dest="slurm_command", required=True, metavar="SUBCOMMAND")
    submit = slurm_sub.add_parser("submit", help="the same as `run --launcher slurm`")
    add_run_arguments(submit)
    submit.set_defaults(func=run.command, launcher="slurm")
    status = slurm_sub.add_parser("status", help="print a job's state, exit code and log file")
    status.add_argument("job_id")
    status.set_defaults(func=show_status)


def show_status(args: argparse.Namespace) -> int:
    info = slurm.job_info(args.job_id)
    for key in ("JobId", "JobName", "JobState", "ExitCode", "RunTime", "NodeList", "StdOut"):
        print(f"{key:9} {info.get(key, '')}")
    return 0
