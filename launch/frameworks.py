"""What each framework is and takes: the one table that the CLI, the launchers, Slurm, sweeps,
reports and both trainers consult, and the one compatibility check they all call, so that a
combination that cannot run is refused before anything starts or is submitted.

A third framework is one row here and one engine (launch.run.engine.Engine) in its own package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from launch.config import Config
from launch.errors import ConfigError, UserError

LAUNCHERS = ("local", "torchrun", "mpirun", "horovodrun", "slurm")
RESTARTING_LAUNCHERS = ("local", "torchrun")  # --max-restarts: they restart every worker after a failure
DOCTOR_LAUNCHERS = ("local", "torchrun", "mpirun", "slurm")
HOROVOD_TF = "Horovod's TensorFlow part does not build against TensorFlow >= 2.16"


@dataclass(frozen=True)
class Framework:
    name: str
    module: str  # its trainer: python -m <module>
    checkpoint: str  # a regular expression for its checkpoint files; group 1 is the step
    color: str  # the same in every figure
    # Its workers learn the cluster from TF_CONFIG: across nodes every worker's address must be known
    # before it starts (--hosts), and plans give each rank its TF_CONFIG.
    needs_tf_config: bool
    torchrun_agent: bool  # under torchrun, its workers run under torchrun's agent (else torchrun's environment)
    launchers: tuple[str, ...]
    elastic_launchers: tuple[str, ...]  # launchers that can run it on a node range MIN:MAX
    backends: tuple[str, ...]  # dist.backend values
    strategies: tuple[str, ...]  # dist.strategy values it honours ("auto": the framework's own choice)
    compressions: dict[str, tuple[str, ...]]  # dist.compression values, per backend
    # Python run in a fresh process: load the saved model (sys.argv[1]) with the framework's own
    # loader and print its parameter count (compare's proof that the file is usable)
    reload_model: str
    model_file: str  # the trained model's file in the run directory
    fp16_mechanism: str  # what train.precision=fp16 relies on, that needs a GPU
    cuda_build: str  # how to install a build that can use the node's GPUs
    compression_fix: str  # what to do about a dist.compression it cannot take
    # Why it lacks a launcher or backend that another framework has, by name (the refusal says so).
    lacks: dict[str, str] = field(default_factory=dict)

    def checkpoint_step(self, name: str) -> int | None:
        """The step of the checkpoint file called `name`, or None when it is none of this framework's."""
        match = re.fullmatch(self.checkpoint, name)
        return int(match[1]) if match else None


FRAMEWORKS = {
    "torch": Framework(
        name="torch",
        module="torch_dist.train",
        checkpoint=r"step-(\d{8,})\.pt",
        color="tab:blue",
        needs_tf_config=False,
        torchrun_agent=True,
        launchers=LAUNCHERS,
        elastic_launchers=("torchrun", "slurm"),
        backends=("auto", "gloo", "nccl", "horovod"),
        strategies=("auto",),
        compressions={
            "auto": ("none", "fp16", "bf16", "powersgd"),
            "gloo": ("none", "fp16", "bf16", "powersgd"),
            "nccl": ("none", "fp16", "bf16", "powersgd"),
            "horovod": ("none", "fp16"),
        },
        reload_model="import sys, torch; "
        "print(sum(v.numel() for v in torch.load(sys.argv[1], weights_only=True).values()))",
        model_file="model.pt",
        fp16_mechanism="it relies on GradScaler",
        cuda_build="a CUDA build of torch that matches the driver (pip install torch, not a +cpu wheel)",
        compression_fix="Horovod compresses only to fp16 (hvd.Compression.fp16); use fp16, or DDP "
        "(dist.backend=gloo/nccl) for bf16 and powersgd",
    ),
    "tf": Framework(
        name="tf",
        module="tf_dist.train",
        checkpoint=r"ckpt-(\d+)\.index",
        color="tab:orange",
        needs_tf_config=True,
        torchrun_agent=False,
        launchers=("local", "torchrun", "mpirun", "slurm"),
        elastic_launchers=(),
        backends=("auto", "gloo", "nccl"),
        strategies=("auto", "default", "mirrored", "multi-worker"),
        compressions={"auto": ("none",), "gloo": ("none",), "nccl": ("none",)},
        reload_model="import sys, keras; print(keras.models.load_model(sys.argv[1], safe_mode=True).count_params())",
        model_file="model.keras",
        fp16_mechanism="mixed_float16",
        cuda_build="TensorFlow with its CUDA libraries (pip install 'tensorflow[and-cuda]', not tensorflow-cpu)",
        compression_fix="tf.distribute has no gradient compression (CommunicationOptions sets packing, timeout "
        "and implementation only); leave it out for tf, or use torch_dist's DDP hooks",
        lacks={
            "horovodrun": HOROVOD_TF,
            "horovod": f"{HOROVOD_TF}; tf_dist's workers all-reduce through MultiWorkerMirroredStrategy, "
            "and torch_dist runs Horovod",
        },
    ),
}
# Sweep and report series that are a framework run another way: name -> (framework, overrides).
VARIANTS = {"horovod": ("torch", ("dist.backend=horovod",))}
VARIANT_COLORS = {"horovod": "tab:green"}


def framework(name: str) -> Framework:
    if name not in FRAMEWORKS:
        raise UserError(f"unknown framework {name!r}: use one of {', '.join(FRAMEWORKS)}")
    return FRAMEWORKS[name]


def color(series: str) -> str | None:
    """The colour of a framework or variant (a series' first part: torch-1g is torch's)."""
    name = series.split("-")[0]
    return FRAMEWORKS[name].color if name in FRAMEWORKS else VARIANT_COLORS.get(name)


@dataclass(frozen=True)
class Placement:
    """Where a run goes, as far as it is known when checked: by the CLI before it starts anything
    (launcher, node range, GPUs asked of Slurm) or by a trainer once started (launcher None, GPUs seen)."""

    launcher: str | None = None
    workers: int = 1  # at most, over every node
    min_nodes: int = 1
    nodes: int = 1
    gpus_per_node: int | None = None  # None: not known (a local start before the trainer looks)
    hosts: bool = True  # every node's host name is known (--hosts) or not needed
    template: str | None = None  # Slurm's template
    max_restarts: int = 0  # --max-restarts: the launcher restarts every worker after a failure
    program: str = "train"  # or "doctor": what the ranks run


def check(config: Config, name: str, where: Placement = Placement()) -> None:
    """Refuse, with one line and the fix, a combination of config, framework and placement that cannot run."""
    fw = framework(name)
    _check_launcher(config, fw, where)
    _check_restarts(config, where)
    _check_options(config, fw, where)


def _check_launcher(config: Config, fw: Framework, where: Placement) -> None:
    launcher = where.launcher
    if launcher is None:
        return
    if launcher not in fw.launchers:
        raise UserError(f"--launcher {launcher} {_lacking(fw, launcher)}: use --launcher {_one_of(fw.launchers)}")
    if where.program == "doctor" and launcher not in DOCTOR_LAUNCHERS:
        raise UserError(f"mnist-dist doctor runs under {_one_of(DOCTOR_LAUNCHERS, 'and')}: pick one of those")
    if where.min_nodes != where.nodes and launcher == "slurm" and where.template != "torch":
        raise UserError(
            f"a node range ({where.min_nodes}:{where.nodes}) needs the torch template (one torchrun "
            f"agent per node); the {where.template} template takes a fixed --nodes, and a requeued job "
            "gets as many again"
        )
    if where.min_nodes != where.nodes and launcher not in fw.elastic_launchers:
        raise UserError(
            f"a node range ({where.min_nodes}:{where.nodes}) needs an elastic launcher: --launcher "
            "torchrun for torch, or --launcher slurm (a requeued job resumes at the size it gets); "
            "TensorFlow's workers are fixed while they run, so restart tf at the new size with "
            "checkpoint.resume=true"
        )
    if fw.needs_tf_config and where.nodes > 1 and not where.hosts and launcher in ("local", "torchrun"):
        raise UserError(
            "TensorFlow needs every worker's address: pass --hosts node1,node2,... (the same list, in "
            "node-rank order, on every node), or set TF_CONFIG yourself"
        )
    if launcher == "horovodrun" and where.nodes > 1:
        raise UserError(
            "horovodrun here starts one node; for several use --launcher slurm --template mpi with dist.backend=horovod"
        )
    if launcher == "slurm":
        _check_slurm(config, fw, where)


def _check_restarts(config: Config, where: Placement) -> None:
    if not where.max_restarts or where.launcher is None:
        return
    if where.launcher not in RESTARTING_LAUNCHERS:
        raise UserError(
            f"--max-restarts works with the {_one_of(RESTARTING_LAUNCHERS, 'and')} launchers; under "
            f"{where.launcher} restart the job (Slurm jobs requeue themselves on preemption)"
        )
    if where.nodes > 1 and not config.log.run_name:
        raise UserError(
            "--max-restarts across nodes needs log.run_name=NAME, the same on every node: restarted "
            "workers find the run's checkpoints by it"
        )


def _lacking(fw: Framework, name: str) -> str:
    """`does not run <framework>`, with the reason its row gives."""
    reason = fw.lacks.get(name)
    return f"does not run {fw.name}" + (f" ({reason})" if reason else "")


def _one_of(names: tuple[str, ...], last: str = "or") -> str:
    return ", ".join(names[:-1]) + f" {last} {names[-1]}" if len(names) > 1 else names[0]


def _check_slurm(config: Config, fw: Framework, where: Placement) -> None:
    if where.gpus_per_node is None:
        return  # not known here (sweep and compare pass Slurm options through to each run)
    gpus, backend = where.gpus_per_node, config.dist.backend
    per_node = where.workers // where.nodes
    mirrored = where.workers == 1 and "mirrored" in fw.strategies  # one process drives every GPU of its node
    if gpus and backend in ("nccl", "auto") and per_node != gpus and not mirrored:
        raise UserError(
            f"--nproc {per_node} tasks per node but --gpus-per-node {gpus}: with nccl every rank "
            "needs its own GPU; make them equal"
        )
    if backend == "nccl" and not gpus:
        raise UserError("dist.backend=nccl needs GPUs: pass --gpus-per-node equal to --nproc")


def _check_options(config: Config, fw: Framework, where: Placement) -> None:
    dist = config.dist
    if dist.backend not in fw.backends:
        raise ConfigError(
            f"dist.backend={dist.backend} {_lacking(fw, dist.backend)}: use dist.backend={_one_of(fw.backends)}"
        )
    if dist.compression not in fw.compressions[dist.backend]:
        raise ConfigError(f"dist.compression={dist.compression}: {fw.compression_fix}")
    if dist.compression != "none" and where.workers == 1 and dist.backend == "auto":
        raise ConfigError(
            f"dist.compression={dist.compression} compresses the all-reduce of several workers; one "
            "worker has none: leave it out, or name dist.backend=gloo (or nccl) to measure it on one"
        )
    if dist.strategy in ("default", "mirrored") and where.workers > 1 and "multi-worker" in fw.strategies:
        raise ConfigError(
            f"dist.strategy={dist.strategy} runs in one process, but {where.workers} were started: "
            "use dist.strategy=multi-worker (or auto)"
        )
    if config.train.precision == "fp16" and where.gpus_per_node == 0:
        raise ConfigError(f"train.precision=fp16 needs a GPU ({fw.fp16_mechanism}): use bf16 or fp32 on CPU")
