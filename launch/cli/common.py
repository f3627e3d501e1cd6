"""What several commands share: the options that start ranks (run, doctor, slurm submit), the job
spec they make, the repeated options (--launcher, --run-option), dry-run output, and the data put
on disk once before ranks start."""

from __future__ import annotations

import argparse
import shlex
import signal
from pathlib import Path

from launch import log
from launch.cluster.cpus import threads_per_worker
from launch.cluster.world import World
from launch.config import Config, add_config_arguments
from launch.data.datasets import load_files, locate
from launch.frameworks import FRAMEWORKS, LAUNCHERS
from launch.jobs import children, launchers, slurm
from launch.jobs.jobspec import JobSpec, SlurmOptions


def add_launcher(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--launcher", choices=LAUNCHERS, default="local")


def add_run_option(parser: argparse.ArgumentParser, example: str) -> None:
    parser.add_argument("--run-option", action="append", default=[], metavar="OPTION", help=f"passed to {example}")


def add_run_arguments(parser: argparse.ArgumentParser, framework: bool = True) -> None:
    if framework:
        parser.add_argument("--framework", choices=sorted(FRAMEWORKS), required=True)
    parser.add_argument("--nproc", type=int, default=1, help="workers per node (default 1)")
    parser.add_argument(
        "--nodes",
        type=_node_count,
        metavar="N|MIN:MAX",
        help="nodes (default: as many as --hosts names, else 1); a range MIN:MAX runs elastic "
        "(torchrun, Slurm): a run that loses nodes goes on with at least MIN",
    )
    parser.add_argument("--dry-run", action="store_true", help="print what would start; start nothing")
    local = parser.add_argument_group("local, torchrun and mpirun")
    local.add_argument("--node-rank", type=int, default=0, help="this node's index with --nodes > 1")
    local.add_argument(
        "--hosts",
        type=lambda text: [h for h in text.split(",") if h],
        default=[],
        metavar="HOST,HOST,...",
        help="every node's host name in node-rank order, the same on every "
        "node: TensorFlow needs them (TF_CONFIG), mpirun starts its ranks there",
    )
    local.add_argument("--master-addr", help="rank 0's host (default: the first of --hosts; needed with --nodes > 1)")
    local.add_argument("--master-port", type=int, help="rendezvous port (default: a free one)")
    local.add_argument(
        "--max-restarts",
        type=int,
        default=0,
        help="restart every worker from the latest checkpoint after a failure, up to N times "
        "(torchrun's own for torch under torchrun; adds checkpoint.resume=true)",
    )
    _add_slurm_arguments(parser.add_argument_group("slurm"))
    add_config_arguments(parser)


def _add_slurm_arguments(job) -> None:
    job.add_argument("--template", choices=slurm.TEMPLATES, help="sbatch template (default: the framework's)")
    job.add_argument("--gpus-per-node", type=int, default=0)
    job.add_argument("--cpus-per-task", type=int)
    job.add_argument("--time", default="01:00:00")
    job.add_argument("--partition")
    job.add_argument("--account")
    job.add_argument("--job-name", default="mnist-dist")
    job.add_argument("--output", help="job log (default: <log.dir>/slurm-%%j.out)")
    job.add_argument(
        "--sbatch",
        action="append",
        default=[],
        metavar="OPTION",
        help="extra #SBATCH option, e.g. --sbatch=--qos=high (repeatable)",
    )
    job.add_argument(
        "--setup",
        action="append",
        default=[],
        metavar="LINE",
        help="shell line run before the workers, e.g. 'module load cuda' (repeatable)",
    )
    job.add_argument(
        "--mpi-launcher",
        choices=("mpirun", "srun"),
        default="mpirun",
        help="mpi template: mpirun inside the allocation, or srun --mpi=pmix",
    )
    job.add_argument(
        "--preempt-signal",
        default="USR1@60",
        metavar="SIG@SECONDS",
        help="Slurm's warning signal before preemption or the time limit: checkpoint, then requeue",
    )
    job.add_argument("--wait", action="store_true", help="follow the job to its end and exit with its exit code")


def job_spec(args: argparse.Namespace, config: Config) -> JobSpec:
    """The job the run arguments ask for (the arguments themselves stay as parsed)."""
    min_nodes, nodes = args.nodes or (len(args.hosts) or 1,) * 2
    overrides = [*args.overrides, *(["checkpoint.resume=true"] if args.max_restarts else [])]
    log_dir = str(Path(config.log.dir).resolve()) if args.launcher == "slurm" else config.log.dir
    if args.launcher == "slurm":
        overrides.append(f"log.dir={log_dir}")
    slurm_options = SlurmOptions(
        template=args.template,
        gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task,
        time=args.time,
        partition=args.partition,
        account=args.account,
        job_name=args.job_name,
        output=args.output or str(Path(log_dir) / "slurm-%j.out"),
        extra_sbatch=tuple(args.sbatch),
        setup=tuple(args.setup),
        mpi_launcher=args.mpi_launcher,
        preempt_signal=args.preempt_signal,
    )
    return JobSpec(
        framework=args.framework,
        launcher=args.launcher,
        nproc=args.nproc,
        nodes=nodes,
        min_nodes=min_nodes,
        node_rank=args.node_rank,
        hosts=tuple(args.hosts),
        master_addr=args.master_addr or (args.hosts[0] if args.hosts else "127.0.0.1"),
        master_port=args.master_port,
        config_path=absolute_path(args.config),
        overrides=tuple(overrides),
        max_restarts=args.max_restarts,
        threads=threads_per_worker(config, World(local_size=args.nproc)),
        log_dir=log_dir,
        slurm=slurm_options,
    )


def _node_count(text: str) -> tuple[int, int]:
    """--nodes N or MIN:MAX (torchrun's --nnodes form) as (min, max)."""
    low, _, high = text.partition(":")
    try:
        bounds = int(low), int(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a node count N or a range MIN:MAX, e.g. 2 or 1:2") from None
    if not 1 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: nodes must be at least 1, and MIN at most MAX")
    return bounds


def absolute_path(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


def shell_line(command: list[str], env: dict[str, str]) -> str:
    return " ".join([f"{k}={shlex.quote(v)}" for k, v in env.items()] + [shlex.quote(c) for c in command])


def print_plan(command: str, result: launchers.Plan) -> None:
    print(command)
    print()
    for note in result.notes:
        print(f"# {note}")
    print(result.table())


def print_dry_run(result: launchers.Plan) -> None:
    lines = [(result.command, result.env)] if result.command else result.per_rank
    print_plan("\n".join(shell_line(cmd, env) for cmd, env in lines), result)


def ensure_data(config: Config) -> None:
    """Put the dataset on disk once, here, before N ranks start (and possibly race to download it),
    and check it: a wrong or broken file is one line here, not one per rank inside a launcher's output."""
    if config.data.dataset != "synthetic":
        data = load_files(config.data.dataset, locate(config.data.dataset, config.data.dir), config.data.custom)
        log.get().info(f"{config.data.dataset} data at {data.source} ({data.check})")


def points_exit_code(points, command: str) -> int:
    """0 only when every point ran and succeeded; else one line naming the failed ones."""
    failed = [f"{p.run_name} (exit code {p.exit_code})" for p in points if not p.ok]
    stop = children.stopped_by()
    if stop:
        log.get().error(f"{command} stopped by {signal.Signals(stop).name} after {len(points)} point(s)")
        return 128 + stop
    if failed:
        log.get().error(f"{command}: {len(failed)} of {len(points)} point(s) failed: {', '.join(failed)}")
        return 1
    return 0
