"""`mnist-dist diff`: what differs between two runs, and their throughput and accuracy side by side."""

from __future__ import annotations

import argparse


def add(commands) -> None:
    diff = commands.add_parser(
        "diff",
        help="what differs between two runs, and their throughput and accuracy side by side",
        description="Print two runs' throughput and accuracy with their ratio, then every config key, run "
        "fact (framework, launcher, backend, world size, nodes, ...), version and host that differs, then every "
        "launch variable (NCCL_*, GLOO_*, TF_*, OMPI_MCA_*, SLURM_*, MASTER_*, ...) but the launchers' own wiring.",
    )
    diff.add_argument("run_a", metavar="RUN_A", help="a run directory or its summary.json")
    diff.add_argument("run_b", metavar="RUN_B", help="a run directory or its summary.json")
    diff.add_argument(
        "--all", action="store_true", help="also the variables launchers set for their own wiring (job ids, ports)"
    )
    diff.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    from launch.experiments.diff import load_run, render

    print(render(load_run(args.run_a), load_run(args.run_b), wiring=args.all), end="")
    return 0
