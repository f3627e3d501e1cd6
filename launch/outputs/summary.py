"""`summary.json`: one schema for both frameworks, read back by sweeps, comparisons and tests."""

from __future__ import annotations

import dataclasses
import json
import platform
import resource
import sys
from dataclasses import dataclass, field
from pathlib import Path

from launch.atomic_files import write_json
from launch.errors import UserError
from launch.outputs.rundir import SUMMARY_FILE

SCHEMA_VERSION = 1


@dataclass
class Summary:
    framework: str  # torch | tf
    backend: (
        str  # the gradients' collective: none | gloo | nccl | horovod (torch); none | ring | nccl | reduce-to-one (tf)
    )
    model: str
    dataset: str
    world_size: int  # at the end; world_size_history has every size the run had
    num_nodes: int
    device: str  # cpu | cuda | gpu
    precision: str
    batch_size_per_worker: int  # per replica: one replica per process, except under TF's MirroredStrategy
    global_batch_size: int
    lr: float  # after scaling with world size
    epochs: int
    steps: int  # optimizer steps taken in total, at whatever world size each ran
    final_eval_accuracy: float
    final_eval_loss: float
    images_per_sec: float  # global, all ranks together, warm-up excluded
    images_per_sec_per_worker: float
    step_ms: float  # mean step time, warm-up excluded
    warmup_steps: int
    peak_rss_bytes_max: int  # over workers
    peak_rss_bytes_mean: float
    model_size_bytes: int  # the saved model file
    wall_time_s: float  # process start to the summary
    startup_s: float  # process start to the first step's end
    dropped_per_epoch: int  # samples no rank saw each epoch (fewer than world_size)
    restarts: int = 0
    launcher: str = ""  # who started the ranks: torchrun, openmpi, slurm, local, single, ... ("" in older runs)
    compression: str = "none"  # dist.compression: the gradients' form on the wire
    accumulate_steps: int = 1  # micro-batches per optimizer step (global_batch_size counts them all)
    tf32: bool = False  # train.tf32: TensorFloat-32 allowed in fp32 matmuls and convolutions on GPUs
    # One entry per start of the run (a resume adds one): world_size, global_batch_size, lr, steps
    # [first, last] (the steps after `first` up to `last` ran at this size), and the epoch and
    # sample (position in that epoch's permutation) it started from.
    world_size_history: list = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    run_id: str = ""  # run.json's: the same in every checkpoint the run wrote (launch.outputs.fingerprint)
    data: dict = field(default_factory=dict)  # sha256 of the data trained on, its source, how it was checked
    # one row per rank: rank, host, interface, cpus, threads, images_per_sec, busy_cores, the step's split
    ranks: list = field(default_factory=list)
    # what decides speed and correctness outside the config (launch.cluster.environment): the launch
    # variables (NCCL_*, GLOO_*, TF_*, OMPI_MCA_*, SLURM_*, MASTER_*, ...), the CPU model, the nodes
    environment: dict = field(default_factory=dict)
    parameters: int = 0  # the model's trained parameters (launch.models)
    flops_per_image: int = 0  # one training image's forward and backward operations (launch.models)
    # the hardware's peak FLOP/s over what the ranks trained on, with its inputs and their sources
    # (launch.cluster.peak), and images_per_sec x flops_per_image as a fraction of it (0: no peak known)
    peak: dict = field(default_factory=dict)
    fraction_of_peak: float = 0.0
    schema_version: int = SCHEMA_VERSION


def write_summary(run_dir: Path, summary: Summary) -> Path:
    path = run_dir / SUMMARY_FILE
    write_json(path, dataclasses.asdict(summary))
    return path


def read_summary(path: Path) -> Summary:
    """Load and check a summary.json; a missing or extra field is an error naming the file."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable summary.json ({exc})") from None
    names = {f.name for f in dataclasses.fields(Summary)}
    required = {
        f.name
        for f in dataclasses.fields(Summary)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    if not isinstance(data, dict) or not required <= data.keys() or not data.keys() <= names:
        got = set(data) if isinstance(data, dict) else set()
        raise UserError(
            f"{path}: summary fields differ from schema {SCHEMA_VERSION} "
            f"(missing {sorted(required - got)}, unknown {sorted(got - names)})"
        )
    return Summary(**data)


def peak_rss_bytes() -> int:
    """This process's peak resident memory (Linux reports kilobytes, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def versions(**frameworks: str) -> dict:
    """Python's, numpy's, ours, the framework's (and its GPU's, CUDA's and NCCL's), the NVIDIA driver's."""
    import numpy

    from launch import __version__
    from launch.cluster.devices import driver_version

    found = {"mnist_dist": __version__, "python": platform.python_version(), "numpy": numpy.__version__, **frameworks}
    driver = driver_version()
    return {**found, "nvidia_driver": driver} if driver else found
