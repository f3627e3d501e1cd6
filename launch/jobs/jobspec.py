"""The job a user asked for, as one frozen value: what the CLI builds from its arguments and hands to
the launchers' plans, the sbatch renderer and sweeps. Tests build it directly and check plans as values."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from launch.config import Config
from launch.frameworks import FRAMEWORKS, Placement
from launch.outputs.rundir import default_name


@dataclass(frozen=True)
class SlurmOptions:
    """What only a Slurm job needs (sbatch options and script lines)."""

    template: str | None = None  # slurm/<template>.sbatch; default: the framework's
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    time: str = "01:00:00"
    partition: str | None = None
    account: str | None = None
    job_name: str = "mnist-dist"
    output: str = "slurm-%j.out"
    extra_sbatch: tuple[str, ...] = ()  # e.g. "--qos=high", "--constraint=a100"
    setup: tuple[str, ...] = ()  # shell lines run first: module load ..., source venv
    mpi_launcher: str = "mpirun"  # mpi template: mpirun | srun (srun --mpi=pmix)
    preempt_signal: str = "USR1@60"  # Slurm's warning before preemption or the time limit: SIG@seconds


@dataclass(frozen=True)
class JobSpec:
    framework: str  # a key of launch.frameworks.FRAMEWORKS
    launcher: str = "local"
    nproc: int = 1  # workers per node
    nodes: int = 1
    min_nodes: int | None = None  # below nodes: elastic (torchrun --nnodes MIN:MAX, sbatch --nodes=MIN-MAX)
    node_rank: int = 0  # this node's index (local, torchrun and mpirun across nodes)
    hosts: tuple[str, ...] = ()  # every node's host name, in node-rank order
    master_addr: str = "127.0.0.1"
    master_port: int | None = None  # default: a free one on one node, launch.cluster.world.DEFAULT_PORT across nodes
    config_path: str | None = None
    overrides: tuple[str, ...] = ()
    max_restarts: int = 0
    threads: int | None = None  # per worker, when known: torchrun's workers get it as OMP_NUM_THREADS
    log_dir: str = "runs"
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    python: str = sys.executable
    program: str | None = None  # the ranks' module, where not the framework's trainer (mnist-dist doctor's)

    @property
    def lowest_nodes(self) -> int:
        return self.min_nodes or self.nodes

    @property
    def elastic(self) -> bool:
        return self.lowest_nodes != self.nodes

    @property
    def workers(self) -> int:
        return self.nodes * self.nproc

    @property
    def module(self) -> str:
        return self.program or FRAMEWORKS[self.framework].module

    @property
    def template(self) -> str:
        return self.slurm.template or self.framework

    def train_args(self, *extra: str) -> list[str]:
        """The trainer's arguments: the config file and every override."""
        return (["--config", self.config_path] if self.config_path else []) + [*self.overrides, *extra]

    def placement(self) -> Placement:
        gpus = self.slurm.gpus_per_node if self.launcher == "slurm" else None
        return Placement(
            launcher=self.launcher,
            workers=self.workers,
            min_nodes=self.lowest_nodes,
            nodes=self.nodes,
            gpus_per_node=gpus,
            hosts=bool(self.hosts),
            template=self.template,
            max_restarts=self.max_restarts,
        )


def workers_label(spec: JobSpec) -> str:
    """The w<N> part of a run name: w8, or w4-8 for an elastic job."""
    if not spec.elastic:
        return f"w{spec.workers}"
    return f"w{spec.lowest_nodes * spec.nproc}-{spec.workers}"


def default_run_prefix(spec: JobSpec, config: Config) -> str:
    """A Slurm job's run name before its job id: log.run_name, or what the run is."""
    return config.log.run_name or default_name(config, spec.framework, workers_label(spec))
