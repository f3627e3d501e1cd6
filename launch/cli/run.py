"""`mnist-dist run` (and `slurm submit`): start N workers of either framework with local processes,
torchrun, mpirun or horovodrun, or submit them to Slurm as an sbatch script."""

from __future__ import annotations

import argparse
from pathlib import Path

from launch import log
from launch.cli.common import add_launcher, add_run_arguments, ensure_data, job_spec, print_dry_run, print_plan
from launch.clock import stamp
from launch.config import Config, load_config
from launch.frameworks import check
from launch.jobs import launchers, slurm
from launch.jobs.jobspec import JobSpec, default_run_prefix
from launch.outputs.rundir import SUMMARY_FILE


def add(commands) -> None:
    run = commands.add_parser(
        "run",
        help="start N workers of either framework: local processes, torchrun, mpirun or Slurm",
        description="Start a training. local/torchrun/mpirun start this node's workers and stream their "
        "output (rank 0 as is, other ranks prefixed); slurm renders an sbatch script from slurm/ and "
        "submits it. --dry-run prints the command or script and the per-rank plan, starting nothing.",
    )
    add_run_arguments(run)
    add_launcher(run)
    run.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)  # a bad config fails here, before anything starts
    spec = job_spec(args, config)
    check(config, spec.framework, spec.placement())
    if spec.launcher == "slurm":
        return _submit(spec, config, args)
    result = launchers.plan(spec)
    if args.dry_run:
        print_dry_run(result)
        return 0
    launchers.preflight(spec.launcher, spec.framework)
    ensure_data(config)
    for note in result.notes:
        log.get().info(note)
    return launchers.run_plan(result, spec.max_restarts)


def _submit(spec: JobSpec, config: Config, args: argparse.Namespace) -> int:
    prefix = default_run_prefix(spec, config)
    script = slurm.render(spec, prefix, Path(spec.log_dir))
    if args.dry_run:
        result = launchers.Plan(spec.framework, launchers.slurm_worlds(spec))
        result.notes.append("nodes are shown as node0..; the port is derived from the job id (shown for job id 0)")
        print_plan(script, result)
        return 0
    launchers.preflight("slurm", spec.framework)
    ensure_data(config)
    script_path = Path(spec.log_dir) / "slurm" / f"{prefix}-{stamp()}.sbatch"
    job = slurm.submit(script, script_path)
    print(
        f"submitted job {job}\n  script:  {script_path}\n  log:     {spec.slurm.output.replace('%j', job)}\n"
        f"  run dir: {Path(spec.log_dir) / f'{prefix}-{job}'}",
        flush=True,
    )
    if not args.wait:
        return 0
    info = slurm.wait(job)
    print(f"job {job} {info.get('JobState')} with exit code {info.get('ExitCode')}", flush=True)
    summary = Path(spec.log_dir) / f"{prefix}-{job}" / SUMMARY_FILE
    if slurm.exit_code(info) == 0 and not summary.is_file():  # e.g. srun exits 0 when no rank started
        log.get().error(f"job {job} left no {summary}: it did not train the run; its log says why")
        return 1
    return slurm.exit_code(info)
