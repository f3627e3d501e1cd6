"""`mnist-dist doctor`: check an allocation (launch.doctor) under the launcher `run` would use."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from launch.cli.common import add_launcher, add_run_arguments, job_spec, print_dry_run
from launch.clock import stamp
from launch.config import load_config
from launch.frameworks import Placement, check
from launch.jobs import launchers, slurm


def add(commands) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="check an allocation: each rank's host, names, interface, CPUs, GPUs and clock; every link; all-reduce",
        description="Start ranks as `run` does (the same launch options) that report their host, how it "
        "resolves every node's name, the interface towards the master, their CPUs, GPUs and clock against "
        "rank 0; then measure a node x node TCP bandwidth and round-trip matrix and an all-reduce sweep "
        "(gloo; NCCL where every rank has a GPU; then, where TensorFlow is installed, its collective as "
        "tf_dist trains with it, a second part under the same launcher). Prints the matrix and the "
        "findings, each naming its hosts, writes doctor.json and doctor.md to <log.dir>/doctor-<time> "
        "(or log.run_name) and exits 1 when there is a finding. train.threads is the CPUs each rank "
        "should have (default 1).",
    )
    add_run_arguments(doctor, framework=False)
    add_launcher(doctor)
    doctor.set_defaults(func=command, framework="torch")


def command(args: argparse.Namespace) -> int:
    from launch.doctor import parts

    config = load_config(args.config, args.overrides)
    check(config, "torch", Placement(launcher=args.launcher, program="doctor"))
    name = config.log.run_name or f"doctor-{stamp()}"
    if args.launcher != "slurm":
        args.overrides = [*args.overrides, f"log.run_name={name}"]
    spec = dataclasses.replace(job_spec(args, config), max_restarts=0)
    if args.dry_run:
        for part in parts.parts(spec):
            if spec.launcher == "slurm":
                print(slurm.render(part, "doctor", Path(spec.log_dir)))
            else:
                print_dry_run(launchers.plan(part))
        return 0
    return parts.run(spec, name)
