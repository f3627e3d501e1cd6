"""Which GPU a rank trains on, from how many it sees and how many ranks share its node.

Launchers hand out GPUs in two ways. Every rank sees all of its node's GPUs and takes its local
rank's (torchrun, mpirun, srun without binding), or each rank sees only its own, chosen by
CUDA_VISIBLE_DEVICES (srun --gpus-per-task or --gpu-bind, site wrappers): then its GPU is device
0, although the node runs several ranks.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from launch.errors import ConfigError


def gpu_for_rank(visible: int, local_rank: int, local_size: int) -> int | None:
    """The index, among the GPUs this process sees, of the one it trains on; None for the CPU."""
    if visible == 0:
        return None
    if visible >= local_size:
        return local_rank
    if visible == 1 and _bound_by_launcher():
        return 0  # srun --gpus-per-task=1 and the like: each rank sees its own GPU alone
    raise ConfigError(
        f"this rank sees {visible} GPU(s) while {local_size} ranks share its node: start at most {visible} "
        "ranks per node, or give each rank its own GPU (srun --gpus-per-task=1) or every GPU of the node"
    )


def _bound_by_launcher() -> bool:
    """Whether CUDA_VISIBLE_DEVICES chose this rank's GPUs (Slurm, site wrappers); unset, a rank sees
    all of its node's. (A container's NVIDIA_VISIBLE_DEVICES is every process's in it, not a rank's.)"""
    return os.environ.get("CUDA_VISIBLE_DEVICES", "").strip() not in ("", "-1")


def backend_on(requested: str, gpu: int | None) -> str:
    """dist.backend for a rank whose GPU is `gpu`: auto is nccl on a GPU and gloo on the CPU."""
    if requested == "auto":
        return "gloo" if gpu is None else "nccl"
    if requested == "nccl" and gpu is None:
        raise ConfigError("dist.backend=nccl needs a GPU for every rank, and this rank sees none: use gloo")
    return requested


def unused_gpus(node_gpus: int, usable: int, visible: str | None) -> bool:
    """Whether this process is allowed GPUs it cannot use: the node has some (as the driver lists
    them), CUDA_VISIBLE_DEVICES (`visible`, None when unset) does not hide them all, and the framework
    sees none, as with a CPU-only build, or a CUDA build without CUDA's libraries."""
    hidden = visible is not None and visible.strip() in ("", "-1")
    return bool(node_gpus) and not usable and not hidden


def node_gpus() -> int:
    """The NVIDIA GPUs the driver lists on this node, there without any CUDA library; 0 without a driver."""
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


def require_usable_gpus(usable: int, cuda_build: str) -> None:
    """Fail, rather than train on the CPU unasked, where the node's GPUs are out of the framework's reach."""
    node = node_gpus()
    if unused_gpus(node, usable, os.environ.get("CUDA_VISIBLE_DEVICES")):
        raise ConfigError(
            f"this node has {node} NVIDIA GPU(s) but this framework build sees none: install {cuda_build}, "
            "or set CUDA_VISIBLE_DEVICES= to train on the CPU"
        )


def driver_version() -> str | None:
    """The NVIDIA driver's version, as the kernel module reports it; None without one."""
    try:  # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  <build date>"
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    match = re.search(r"\s(\d+\.\d+(?:\.\d+)?)\s", text)
    return match[1] if match else None
