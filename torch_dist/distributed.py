"""torch.distributed plumbing: backend and device choice, process group life cycle, small collectives."""

from __future__ import annotations

import gc
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from launch.errors import ConfigError
from launch.world import World


def choose_backend(requested: str, world: World) -> tuple[str, torch.device]:
    """The process group backend and this rank's device.

    auto: nccl when every rank on this node gets its own GPU, else gloo on the CPU.
    """
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if requested == "horovod":
        raise ConfigError("dist.backend=horovod is not supported by torch_dist yet: use auto, gloo or nccl")
    if requested == "auto":
        requested = "nccl" if gpus and world.local_size <= gpus else "gloo"
    if requested == "nccl":
        if world.local_size > gpus:
            raise ConfigError(f"dist.backend=nccl needs one GPU per rank, but this node runs {world.local_size} "
                              f"ranks and has {gpus} GPU(s): start at most {gpus} ranks per node, or use gloo")
        torch.cuda.set_device(world.local_rank)
        return "nccl", torch.device("cuda", world.local_rank)
    return "gloo", torch.device("cpu")


def init(world: World, backend: str, timeout_s: int) -> None:
    """Join the process group (only when there is more than one rank)."""
    if world.size == 1:
        return
    # torchrun's agent already serves the rendezvous store on MASTER_PORT: env:// reuses it.
    url = "env://" if world.source == "torchrun" else f"tcp://{world.master_addr}:{world.master_port}"
    dist.init_process_group(backend, init_method=url, rank=world.rank, world_size=world.size,
                            timeout=timedelta(seconds=timeout_s))


def gather_rows(row: list[float], device: torch.device) -> np.ndarray:
    """Every rank's row of numbers, as a (world, len(row)) float64 array on every rank."""
    mine = torch.tensor(row, dtype=torch.float64, device=device)
    if not dist.is_initialized():
        return mine.cpu().numpy()[None]
    rows = torch.empty(dist.get_world_size() * len(row), dtype=torch.float64, device=device)
    dist.all_gather_single(rows, mine)
    return rows.view(-1, len(row)).cpu().numpy()


def sum_across_ranks(values: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(values)
    return values


def shutdown() -> None:
    """Leave the process group without the exit-time abort seen after a bare destroy_process_group.

    Wait for every rank, let the caller's model and optimizer (and DDP's reducer) be freed first,
    then destroy the group.
    """
    if not dist.is_initialized():
        return
    dist.barrier()
    gc.collect()
    dist.destroy_process_group()
